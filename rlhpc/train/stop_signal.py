"""The rule both backends stop by: the first SIGUSR1/SIGTERM/SIGINT asks for a checkpoint at the end of this
iteration and then an exit, a second one stops now.

Slurm sends SIGUSR1 before the wall-time limit (`#SBATCH --signal=B:USR1@N`), SIGTERM on scancel or pre-emption,
and Ctrl+C is SIGINT. The trainer makes one StopSignal before Ray starts and hands it to the backend: the
in-process loop reads `received` after each iteration, the Tune backend through its callback (rlhpc.train.tune_run).

Slurm kills a job KillWait seconds after its SIGTERM (30 by default): an iteration that has not ended within
RLHPC_STOP_GRACE_S (15 s) of it, waiting on a hung simulator say, is interrupted as by a second signal (`grace_over`):
the in-process trainer saves the last finished iteration instead, a Tune run stops Tune there and each trial goes on
from its last checkpoint (rlhpc.train.tune_run.StopOnSignal).
"""

import os
import signal
import threading

from rlhpc.outputs.report import announce_stop

STOP_SIGNALS = ("SIGUSR1", "SIGTERM", "SIGINT")  # Slurm's --signal, scancel/preemption, Ctrl+C
# While Ray starts (~10 s) only these are caught: kept, so the backend stops after its first iteration with a
# checkpoint instead of the process dying as their defaults would. Ctrl+C keeps its default: it interrupts the start.
EARLY_SIGNALS = ("SIGUSR1", "SIGTERM")
GRACE_VAR, DEFAULT_GRACE_S = "RLHPC_STOP_GRACE_S", 15.0  # of Slurm's default KillWait (30 s): the rest to save, exit


def grace_s() -> float:
    return float(os.environ.get(GRACE_VAR) or DEFAULT_GRACE_S)


def interrupt() -> None:
    raise KeyboardInterrupt


class StopSignal:
    """received: the first signal's name (None: none yet). on_second: what a second signal does; by default it
    raises KeyboardInterrupt where the process is, which the backends report as a stop without checkpoint."""

    def __init__(self):
        self.received = None
        self.on_second = interrupt
        self.grace_over = False  # SIGTERM's grace passed before the iteration ended: interrupted where it was
        self._grace_timer: threading.Timer | None = None

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
        if self.received == "SIGTERM":
            self._grace_timer = threading.Timer(grace_s(), self._end_grace)
            self._grace_timer.daemon = True
            self._grace_timer.start()
        return None

    def _end_grace(self) -> None:
        """The iteration did not end in time: a second signal, to the main thread (a blocking wait there, on a hung
        simulator's socket say, returns to Python for its handler)."""
        self.grace_over = True
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    def iteration_ended(self) -> None:
        """The iteration ended after the signal (Tune: every trial's did, or Tune ended): no interruption now (the
        checkpoint is being written)."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()

    def __getstate__(self):
        # Tune pickles its callbacks, this object with them, into the experiment's state: what it holds belongs
        # to this process (a resumed run gets the new process's object: rlhpc.train.tune_run.make_tuner).
        return {}

    def __setstate__(self, state):
        type(self).__init__(self)
