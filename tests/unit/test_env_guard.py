"""The env guard (rlhpc.envs.guard) on envs that crash and hang for real, in this process: the copy is rebuilt, its
episode ends truncated with the failure in its info, and a copy that keeps failing ends the run with its own error."""

import time

import gymnasium as gym
import numpy as np
import pytest

from rlhpc.algo.metrics import count_env_failures
from rlhpc.envs import guard
from rlhpc.envs.guard import RESTART_INFO, TIMEOUT_INFO, EnvGuard, GuardedCreator


class Flaky(gym.Env):
    """Counts up; `fail` (shared by the copies built, like a simulator's licence server) says which step raises or
    hangs."""

    observation_space = gym.spaces.Box(0, 1000, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)
    built = 0

    def __init__(self, fail: dict):
        Flaky.built += 1
        self.fail, self.t, self.closed = fail, 0, False

    def reset(self, *, seed=None, options=None):
        self.t = 0
        if self.fail.get("reset"):
            raise ConnectionError("simulator did not start")
        return np.array([0], np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t in self.fail.get("raise_at", ()):
            raise RuntimeError(f"solver diverged at step {self.t}")
        if self.t in self.fail.get("hang_at", ()):
            time.sleep(3600)
        return np.array([self.t], np.float32), 1.0, False, False, {}

    def close(self):
        self.closed = True


def guarded(fail: dict, timeout_s: float = 0):
    built = []

    def build():
        built.append(Flaky(fail))
        return built[-1]

    return EnvGuard(build(), build, timeout_s), built


def test_a_crash_ends_the_episode_truncated_and_the_next_reset_rebuilds_the_env():
    env, built = guarded({"raise_at": (3,)})
    env.reset()
    env.step(0)
    env.step(0)
    observation, reward, terminated, truncated, info = env.step(0)
    assert (observation.tolist(), reward, terminated, truncated, info) == ([2.0], 0.0, False, True, {RESTART_INFO: 1})
    assert len(built) == 1
    env.reset()
    assert len(built) == 2 and built[0].closed, "the crashed env is closed and a new one built"
    assert env.step(0)[0].tolist() == [1.0]  # the new one steps


def test_a_copy_that_keeps_failing_ends_with_the_simulators_own_error():
    env, built = guarded({"raise_at": (1,)})
    env.reset()
    for _ in range(guard.MAX_FAILURES_IN_A_ROW - 1):
        assert env.step(0)[3] is True
        env.reset()
    with pytest.raises(RuntimeError, match="solver diverged at step 1"):
        env.step(0)
    assert len(built) == guard.MAX_FAILURES_IN_A_ROW


def test_a_reset_that_fails_is_retried_on_a_new_env_then_gives_up():
    env, built = guarded({"reset": True})
    with pytest.raises(ConnectionError, match="simulator did not start"):
        env.reset()
    assert len(built) == guard.MAX_FAILURES_IN_A_ROW


def test_a_hung_step_is_abandoned_after_the_limit_and_counted_as_a_timeout():
    env, built = guarded({"hang_at": (2,)}, timeout_s=0.3)
    env.reset()
    env.step(0)
    started = time.monotonic()
    *_, truncated, info = env.step(0)
    assert time.monotonic() - started < 2
    assert truncated and info == {TIMEOUT_INFO: 1}
    env.reset()
    assert len(built) == 2 and env.step(0)[0].tolist() == [1.0]


def test_the_creator_gives_each_copy_its_identity_and_a_guard(monkeypatch, tmp_path):
    from ray.rllib.env.env_context import EnvContext

    from rlhpc.envs import identity

    monkeypatch.setenv(identity.ROOT_VAR, str(tmp_path))
    creator = GuardedCreator(lambda config: Flaky({}), 0, num_envs=2)
    context = EnvContext({}, worker_index=1)
    envs = [creator(context), creator(context)]
    assert all(isinstance(env, EnvGuard) for env in envs)
    assert len({p.name for p in tmp_path.rglob("copy-*")}) == 2  # a folder each: copy-0, copy-1
    for env in envs:
        env.close()

    from rlhpc.envs.guard_multi_agent import MultiAgentEnvGuard

    assert isinstance(GuardedCreator(lambda config: TwoAgents(), 0)(context), MultiAgentEnvGuard)


def two_agents_class():
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    class TwoAgents(MultiAgentEnv):
        """Two agents that act together; step number `crash_at` (counted over the env's life) raises."""

        def __init__(self, crash_at=(), built=None):
            super().__init__()
            self.agents = self.possible_agents = ["a", "b"]
            self.observation_spaces = {a: gym.spaces.Box(-1, 1, (2,)) for a in self.agents}
            self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.agents}
            self.crash_at, self.steps = set(crash_at), 0
            if built is not None:
                built.append(self)

        def reset(self, *, seed=None, options=None):
            return {a: np.full(2, 0.5, np.float32) for a in self.agents}, {}

        def step(self, action_dict):
            self.steps += 1
            if self.steps in self.crash_at:
                raise ConnectionError("co-simulation peer gone")
            obs = {a: np.full(2, 0.1 * self.steps, np.float32) for a in action_dict}
            return obs, dict.fromkeys(obs, 1.0), {"__all__": False}, {"__all__": False}, {}

    return TwoAgents


def TwoAgents(**kwargs):
    return two_agents_class()(**kwargs)


def test_a_multi_agent_env_that_crashes_ends_the_episode_for_every_agent_and_is_rebuilt():
    from rlhpc.envs.guard_multi_agent import MultiAgentEnvGuard

    built = []
    guard = MultiAgentEnvGuard(TwoAgents(crash_at={2}, built=built), lambda: TwoAgents(crash_at={1, 2, 3},
                                                                                          built=built), 0)
    assert guard.get_action_space("a") == gym.spaces.Discrete(2) and guard.agents == ["a", "b"]
    obs, _ = guard.reset()
    obs, *_ = guard.step({"a": 0, "b": 1})
    # Step 2 raises: the agents that acted get the observation they acted on, reward 0, and every agent is done.
    last, rewards, terminated, truncated, infos = guard.step({"a": 0, "b": 1})
    assert {a: list(o) for a, o in last.items()} == {a: list(o) for a, o in obs.items()}
    assert rewards == {"a": 0.0, "b": 0.0} and terminated == {"__all__": False}
    assert truncated == {"__all__": True, "a": True, "b": True} and infos == {"a": {RESTART_INFO: 1},
                                                                            "b": {RESTART_INFO: 1}}
    logger = Logger()
    assert count_env_failures(Episode(infos), logger) is True and logger.logged == [("env_restarts", 1, "sum")]
    # Each rebuilt env fails at its first step: the third failure in a row is the env's own error.
    guard.reset()
    assert len(built) == 2
    guard.step({"a": 0, "b": 0})  # the second
    guard.reset()
    with pytest.raises(ConnectionError, match="co-simulation peer gone"):
        guard.step({"a": 0, "b": 0})


class Episode:
    def __init__(self, info):
        self.info = info

    def get_infos(self, index):
        return self.info


class Logger:
    def __init__(self):
        self.logged = []

    def log_value(self, key, value, reduce=None):
        self.logged.append((key, value, reduce))


def test_the_callback_counts_the_failed_episodes_and_leaves_them_out_of_the_returns():
    logger = Logger()
    assert count_env_failures(Episode({RESTART_INFO: 1}), logger) is True
    assert count_env_failures(Episode({TIMEOUT_INFO: 1}), logger) is True
    assert count_env_failures(Episode({}), logger) is False
    assert logger.logged == [("env_restarts", 1, "sum"), ("env_timeouts", 1, "sum")]


def test_an_env_that_fails_to_start_is_started_again_at_its_first_reset(monkeypatch, tmp_path):
    """A simulator that fails to start (its licence server busy) once: the copy starts at the next try. In a
    Gymnasium async sub-env process the exception would have killed the process ("Connection reset by peer")."""
    from ray.rllib.env.env_context import EnvContext

    from rlhpc.envs import identity

    monkeypatch.setenv(identity.ROOT_VAR, str(tmp_path))
    attempts = []

    def build(config):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("licence server busy")
        return Flaky({})

    spaces = (Flaky.observation_space, Flaky.action_space)
    env = GuardedCreator(build, 0, num_envs=1, spaces=spaces)(EnvContext({}, worker_index=1))
    assert env.observation_space == Flaky.observation_space  # what the vector env checks before any reset
    assert env.reset()[0].tolist() == [0.0] and len(attempts) == 2
    with pytest.raises(ConnectionError, match="licence server busy"):  # unknown spaces: nothing to stand in
        attempts.clear()
        GuardedCreator(build, 0)(EnvContext({}, worker_index=1))
