"""Each env copy in a guard: a simulator that crashes or hangs costs that copy's episode, not the run.

RLlib builds every copy of an env through the creator registered for its name (`GuardedCreator`, registered by
rlhpc.envs.sources for Gymnasium ids and classes alike), in whichever process the copy lives: the driver, an env
runner, or a Gymnasium async sub-env process. The creator first gives the copy its identity (rlhpc.envs.identity:
runner and copy index, a folder of its own), then wraps the env in an `EnvGuard`:

- a `step` or `reset` that raises is caught: the copy's episode ends there as truncated (at the last observation it
  gave, reward 0 for the failed step, as at a time limit), the env is closed and built again at the next reset, and
  the step's info says so (`rlhpc_env_restart`); rlhpc.algo.metrics counts these per iteration as `env_restarts`.
  RLlib's own `restart_failed_sub_environments` would rebuild every copy of the runner and drop all their episodes.
- a `step` that takes longer than `step_timeout_s` (a `reset`: `reset_timeout_s`) is abandoned the same way and
  counted as `env_timeouts`: a SIGALRM timer interrupts it (a blocking socket read, a sleep, Python code; not a C
  loop that never returns to Python), then `close()` is called, which for a simulator in its own process should
  kill that process (custom_gym_env/external_sim_env.py). The timer needs the process's main thread, where RLlib's
  env runners, Gymnasium's sub-env processes and the in-process trainer all step; elsewhere there is no timeout.
- a copy that fails `MAX_FAILURES_IN_A_ROW` times without one good step in between (its simulator cannot start, or
  fails at every step) ends the run with the env's own exception: restarting would only burn the allocation.

Each kind of failure is logged once per copy (one line: the exception), not at every restart.
A multi-agent env gets the same guard (rlhpc.envs.guard_multi_agent): a failed step ends the episode for every agent.
"""

import logging
import signal
import threading
from collections.abc import Callable

import gymnasium

logger = logging.getLogger(__name__)

MAX_FAILURES_IN_A_ROW = 3
RESTART_INFO, TIMEOUT_INFO = "rlhpc_env_restart", "rlhpc_env_timeout"  # in the info of the step that failed
RESET_TIMEOUT_FACTOR = 5  # a reset (a simulator's warm-up) may take this many step limits


class EnvTimeout(Exception):
    """A step or reset took longer than its limit."""


class GuardedCreator:
    """env_config -> the env in an EnvGuard, with the copy's identity. build: env_config -> env (picklable: it
    travels to every env runner). step_timeout_s: 0 for none."""

    def __init__(self, build: Callable, step_timeout_s: float, num_envs: int | None = None, spaces=None):
        self.build = build
        self.step_timeout_s = step_timeout_s
        self.num_envs = num_envs  # copies per env runner, for dense copy ids (rlhpc.envs.identity)
        self.spaces = spaces  # (observation, action) space of a single-agent env, as probed; None: unknown
        self.env_creator = getattr(build, "env_creator", build)  # what rlhpc.envs.sources ships to every node

    def __call__(self, env_config):
        from rlhpc.envs import identity
        from rlhpc.envs.gym_compat import is_multi_agent

        env_config = identity.assign(env_config, self.num_envs)
        try:
            env = self.build(env_config)
        except Exception as e:
            if self.spaces is None:
                raise
            # Failing to start is failing to reset: retried on a new env at the first reset, then the env's own
            # error. (In a Gymnasium async sub-env process, an exception here killed the process: the runner saw
            # only "Connection reset by peer", and the env's traceback went to stderr.)
            observation_space, action_space = self.spaces
            env = Unbuilt(observation_space, action_space, e)
        multi_agent = is_multi_agent(env)
        if not multi_agent and not isinstance(env, gymnasium.Env):
            return env

        def rebuild():  # the same identity (slot, folder) again
            return self.build(identity.assign(env_config, self.num_envs))

        if multi_agent:  # RLlib's MultiAgentEnv: imported only where such an env is built (RLlib is loaded there)
            from rlhpc.envs.guard_multi_agent import MultiAgentEnvGuard as kind
        else:
            kind = EnvGuard
        guard = kind(env, rebuild, self.step_timeout_s, name=f"env copy {getattr(env_config, 'copy_id', '?')}",
                     release=lambda: identity.release(env_config))
        guard._broken = isinstance(env, Unbuilt)
        return guard

    def __repr__(self) -> str:
        return f"GuardedCreator({self.build!r})"


class Unbuilt(gymnasium.Env):
    """Stands in for a copy whose env raised while being built: the guard builds it again at the first reset."""

    def __init__(self, observation_space, action_space, error: Exception):
        self.observation_space, self.action_space, self.error = observation_space, action_space, error

    def reset(self, *, seed=None, options=None):
        raise self.error

    def step(self, action):
        raise self.error


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


class EnvGuard(Guarded, gymnasium.Wrapper):
    """One env copy that is rebuilt when it raises or hangs (module docstring)."""

    def __init__(self, env, rebuild: Callable, step_timeout_s: float, name: str = "env copy",
                 release: Callable | None = None):
        gymnasium.Wrapper.__init__(self, env)
        self._guard(env, rebuild, step_timeout_s, name, release)

    def reset(self, **kwargs):
        return self._reset(**kwargs)

    def step(self, action):
        # A failed step ends the episode there, cut short as at a time limit; the next reset builds the env again.
        return self._step(action, lambda kind: (self._last_observation, 0.0, False, True, {kind: 1}))

    def close(self):
        Guarded.close(self)

