"""The rule both backends stop by: the first SIGUSR1/SIGTERM/SIGINT asks for a checkpoint at the end of this
iteration and then an exit, a second one stops now.

Slurm sends SIGUSR1 before the wall-time limit (`#SBATCH --signal=B:USR1@N`), SIGTERM on scancel or pre-emption,
and Ctrl+C is SIGINT. The trainer makes one StopSignal before Ray starts and hands it to the backend: the
in-process loop reads `received` after each iteration, the Tune backend through its callback (rlhpc.train.tune_run).
"""

import signal

from rlhpc.outputs.report import announce_stop

STOP_SIGNALS = ("SIGUSR1", "SIGTERM", "SIGINT")  # Slurm's --signal, scancel/preemption, Ctrl+C
# While Ray starts (~10 s) only these are caught: kept, so the backend stops after its first iteration with a
# checkpoint instead of the process dying as their defaults would. Ctrl+C keeps its default: it interrupts the start.
EARLY_SIGNALS = ("SIGUSR1", "SIGTERM")


def interrupt() -> None:
    raise KeyboardInterrupt


class StopSignal:
    """received: the first signal's name (None: none yet). on_second: what a second signal does; by default it
    raises KeyboardInterrupt where the process is, which the backends report as a stop without checkpoint."""

    def __init__(self):
        self.received = None
        self.on_second = interrupt

    def catch(self, names=EARLY_SIGNALS) -> None:
        """Installs the handler for these signals (again after ray.init, which makes SIGTERM exit at once; and by
        a backend, after Tune installed its own handlers, so that ours win)."""
        for name in names:
            signal.signal(getattr(signal, name), self._on_signal)

    def catch_all(self, on_second=interrupt) -> None:
        self.on_second = on_second
        self.catch(STOP_SIGNALS)

    def _on_signal(self, signum, frame):
        if self.received:
            return self.on_second()
        self.received = signal.Signals(signum).name
        announce_stop(self.received)
        return None

    def __getstate__(self):
        # Tune pickles its callbacks, this object with them, into the experiment's state: what it holds belongs
        # to this process (a resumed run gets the new process's object: rlhpc.train.tune_run.make_tuner).
        return {}

    def __setstate__(self, state):
        type(self).__init__(self)
