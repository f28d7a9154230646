"""The warnings a run silences or rewrites, in every process that trains: the driver, Tune's trial actor, env runners.

The trainer calls quiet_rllib_noise() before Ray starts; RLlib's other processes never run the trainer's code, so
the callback every run trains with (rlhpc.algo.metrics) calls it when RLlib builds it there, before the env and the
RLModule are made. Each filter says why it exists; real warnings (an env's observation outside its space, ...) stay.
In the driver, the worker output Ray forwards to the run's log also passes through forward_worker_output's filter.
"""

import logging
import re
import sys
import warnings
from collections.abc import Callable

from rlhpc.errors import warn

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colour codes gymnasium.logger wraps its messages in
# What Gymnasium's async vector env logs when a sub-env raises, before raising the error again in the runner.
ASYNC_WORKER_ERRORS = ("ERROR: Received the following error from Worker", "ERROR: Traceback",
                       "ERROR: Raising the last exception back")
REPLACED: dict[str, Callable] = {"showwarning": warnings.showwarning,  # what show_warning stands in for
                                 "unraisablehook": sys.unraisablehook}  # what exit_in_a_finalizer stands in for


class TextFilter(logging.Filter):
    """A filter on a logger's records that contain `text`; equal filters (same kind, same text) are one, since
    addFilter adds each once and quiet_rllib_noise runs again in every process that builds RLlib's callbacks."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def __eq__(self, other):
        return type(other) is type(self) and other.text == self.text

    def __hash__(self):
        return hash((type(self).__name__, self.text))


class Drop(TextFilter):
    """Drops a logger's records that contain `text`."""

    def filter(self, record):
        return self.text not in record.getMessage()


class WithoutTraceback(TextFilter):
    """Keeps a logger's records that contain `text` to their one line: the traceback is in the trial's error.txt and
    the run's error line names its cause."""

    def filter(self, record):
        if self.text in str(record.msg):
            record.exc_info, record.exc_text = None, None
        return True


def show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning, with gymnasium's coloured warnings as one plain `warning:` line: its logger wraps
    each in ANSI colour codes, which a Slurm log file shows raw ("\\x1b[33mWARN: ...\\x1b[0m")."""
    text = str(message)
    if ANSI.search(text):
        text = ANSI.sub("", text).strip()
        if text.startswith(ASYNC_WORKER_ERRORS):  # raised again in the runner: the trainer's error line and
            return                                # error.txt have it, once
        warn(f"gymnasium: {text.removeprefix('WARN: ')}" if text.startswith(("WARN: ", "ERROR: ")) else text)
        return
    REPLACED["showwarning"](message, category, filename, lineno, file, line)


def exit_in_a_finalizer(unraisable) -> None:
    """sys.unraisablehook without the SystemExit that Ray's SIGTERM handler raises when an env runner is ended while
    a finalizer runs (EnvRunner.__del__ at the end of a run): Python printed it as "Exception ignored in: ..." with
    a traceback, which Ray forwarded into the job's log mid-line (seen: it split the run's summary line). The
    process is being ended on purpose; any other exception in a finalizer is printed as before."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    REPLACED["unraisablehook"](unraisable)


# What a Ray worker prints as Ray ends it on purpose (a trial's env runners when the trial ends, one still importing
# as its replacement starts): Ray's SIGTERM handler raises SystemExit wherever the worker is, which Python prints as a
# traceback; and a worker whose raylet connection closes under it aborts with a C++ stack dump. Seen in a Slurm job
# whose env failed (tests/test_slurm.py): both landed in its log after the run's one-line error.
ENDED_BY_RAY = "sigterm_handler"  # the frame Ray's SIGTERM handler leaves in the traceback
RAYLET_GONE = "Unexpected error in IPC to the Raylet"  # a worker's last line before its abort and stack dump


class EndingWorkersFilter:
    """The forwarded lines of each worker (by node and pid) without the noise above: a traceback (with its "Exception
    ignored in" line) is held until its exception line, dropped if it is a SystemExit raised in Ray's SIGTERM
    handler, else printed whole; after RAYLET_GONE the worker prints nothing but its dump, then ends. Any other
    traceback or line is printed as before. A worker writes its stderr unbuffered, line by line, so a traceback can
    arrive in several batches: what is held is held per worker."""

    def __init__(self):
        self.held: dict[tuple, list[str]] = {}  # worker -> the traceback it is printing
        self.aborting: set[tuple] = set()  # workers past RAYLET_GONE

    def lines(self, worker: tuple, lines: list[str]) -> list[str]:
        shown = []
        for line in lines:
            if worker in self.aborting:
                continue
            held = self.held.get(worker)
            if held is not None:
                held.append(line)
                if line[:1].isspace() or not line.strip() or line.startswith("Traceback (most recent call last)"):
                    continue  # its frames, and the code lines under them
                del self.held[worker]  # the exception line: the traceback has ended
                if not (line.startswith("SystemExit") and any(ENDED_BY_RAY in h for h in held)):
                    shown.extend(held)
            elif line.startswith(("Exception ignored in", "Traceback (most recent call last)")):
                self.held[worker] = [line]
            elif RAYLET_GONE in line:
                self.aborting.add(worker)
            else:
                shown.append(line)
        return shown


def forward_worker_output() -> None:
    """Puts EndingWorkersFilter before Ray's printing of worker output in this driver (after ray.init, which adds it
    as the "ray_print_logs" handler of its dispatcher; a Ray without that dispatcher prints as it did)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    ending_workers = EndingWorkersFilter()
    for name, print_logs in list(getattr(dispatcher, "handlers", [])):
        if name != "ray_print_logs" or getattr(print_logs, "__name__", "") == "filtered":
            continue

        def filtered(data, print_logs=print_logs):
            worker = (data.get("ip"), data.get("pid"), data.get("is_err"))
            lines = ending_workers.lines(worker, list(data.get("lines", [])))
            if lines:
                print_logs({**data, "lines": lines})

        dispatcher.remove_handler(name)
        dispatcher.add_handler(name, filtered)


def quiet_rllib_noise() -> None:
    """Installs the filters in this process (again is harmless)."""
    import gymnasium.logger  # noqa: F401 -- its import puts a "once" filter for its deprecations first; ours go before

    # Deprecations inside Ray, RLlib and Gymnasium (CartPole-v0 "out of date": the tutorial's env, on purpose):
    # nothing the user can change. Deprecated *flags and keys* of ours are said by rlhpc.run (old_keys, cli).
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Box's "precision lowered by casting to float32": RLlib's and Gymnasium's own spaces trigger it.
    warnings.filterwarnings("ignore", module="gymnasium.spaces.box")
    if getattr(warnings.showwarning, "__name__", "") != show_warning.__name__:
        REPLACED["showwarning"] = warnings.showwarning
        warnings.showwarning = show_warning
    if getattr(sys.unraisablehook, "__name__", "") != exit_in_a_finalizer.__name__:
        REPLACED["unraisablehook"] = sys.unraisablehook
        sys.unraisablehook = exit_in_a_finalizer
    # "You are running PPO on the new API stack! This is the new default ...": said for every config RLlib checks.
    logging.getLogger("ray.rllib.algorithms.algorithm_config").addFilter(Drop("on the new API stack"))
    # RLlib's own modules use a class it deprecated (RLModule(config=...)), in every process that builds one.
    logging.getLogger("ray._common.deprecation").addFilter(Drop("RLModule(config="))
    # An env that raised, logged with its traceback before RLlib raises it again: said once, by the run's error line
    # (in process) or by the runner's one line (rlhpc.algo.runner_errors).
    logging.getLogger("ray.rllib").addFilter(Drop("restart_failed_sub_environments' is False"))  # env_runner.py's
    # Tune logs a failed trial with its traceback, which error.txt holds; the run ends with the cause in one line.
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(WithoutTraceback("Trial task failed for trial"))
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)  # "Install gputil for GPU monitoring"
    # A local Ray says it turned token auth on; true, and nothing to do about it.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
