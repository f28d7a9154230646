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
What both guards share (timer, budget, rebuild) is rlhpc.envs.guard_base.
"""

from collections.abc import Callable

import gymnasium

from rlhpc.envs.guard_base import MAX_FAILURES_IN_A_ROW, RESTART_INFO, TIMEOUT_INFO, EnvTimeout, Guarded

__all__ = ["MAX_FAILURES_IN_A_ROW", "RESTART_INFO", "TIMEOUT_INFO", "EnvGuard", "EnvTimeout", "GuardedCreator",
           "Unbuilt"]

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

        kind: Callable[..., Guarded] = EnvGuard
        if multi_agent:  # RLlib's MultiAgentEnv: imported only where such an env is built (RLlib is loaded there)
            from rlhpc.envs.guard_multi_agent import MultiAgentEnvGuard

            kind = MultiAgentEnvGuard
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

