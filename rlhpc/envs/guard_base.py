"""What the single- and multi-agent env guards share (rlhpc.envs.guard, rlhpc.envs.guard_multi_agent): the env they
hold and how it is rebuilt, the timer on each step and reset, the failure budget and its log lines."""

import logging
import signal
import threading
from collections.abc import Callable

logger = logging.getLogger("rlhpc.envs.guard")  # one logger for both guards' lines

MAX_FAILURES_IN_A_ROW = 3
RESTART_INFO, TIMEOUT_INFO = "rlhpc_env_restart", "rlhpc_env_timeout"  # in the info of the step that failed
RESET_TIMEOUT_FACTOR = 5  # a reset (a simulator's warm-up) may take this many step limits


class EnvTimeout(Exception):
    """A step or reset took longer than its limit."""


class Guarded:
    """What both guards share: the env they hold, when to rebuild it, the timer, the failure budget and its log."""

    def _guard(self, env, rebuild: Callable, step_timeout_s: float, name: str, release: Callable | None) -> None:
        self.env = env
        self._rebuild = rebuild
        self._release = release  # gives the copy's identity back when it closes
        self._step_timeout_s = step_timeout_s
        self._name = name
        self._broken = False
        self._failures_in_a_row = 0
        self._logged: set = set()
        self._last_observation = None

    def _reset(self, **kwargs):
        while True:
            try:
                if self._broken:
                    self._replace_env()
                observation, info = self._timed(self.env.reset, self._step_timeout_s * RESET_TIMEOUT_FACTOR,
                                                **kwargs)
            except Exception as e:  # noqa: BLE001 -- any failure of the user's simulator
                self._failed(e, "reset")
                continue
            self._last_observation = observation
            return observation, info

    def _step(self, action, failed_step: Callable):
        """env.step(action), or when it fails, failed_step(info key that counts it): the episode's cut-short end."""
        try:
            result = self._timed(self.env.step, self._step_timeout_s, action)
        except Exception as e:  # noqa: BLE001 -- any failure of the user's simulator
            return failed_step(self._failed(e, "step"))
        self._failures_in_a_row = 0
        self._last_observation = result[0]
        return result

    def close(self):
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 -- a broken simulator may fail to close too; it is being dropped
            pass
        if self._release:
            self._release()

    def _failed(self, error: Exception, call: str) -> str:
        """Marks the copy for a rebuild (or gives up with the error); -> the info key that counts it."""
        self._failures_in_a_row += 1
        self._broken = True
        timed_out = isinstance(error, EnvTimeout)
        what = f"{type(error).__name__}: {error}"
        if self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            logger.error("warning: %s failed %d times in a row (%s: %s): giving up", self._name,
                         self._failures_in_a_row, call, what)
            raise error
        if (call, type(error)) not in self._logged:
            self._logged.add((call, type(error)))
            logger.warning("warning: %s: %s %s; rebuilding it (logged once per kind)", self._name, call,
                           "timed out" if timed_out else f"raised {what}")
        return TIMEOUT_INFO if timed_out else RESTART_INFO

    def _replace_env(self) -> None:
        self.close()
        self.env = self._rebuild()
        self._broken = False

    def _timed(self, call: Callable, limit_s: float, *args, **kwargs):
        if not limit_s or threading.current_thread() is not threading.main_thread():
            return call(*args, **kwargs)

        def expired(signum, frame):
            raise EnvTimeout(f"no answer within {limit_s:g} s (--env-timeout)")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, limit_s)
        try:
            return call(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
