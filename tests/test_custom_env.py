"""Fast, Ray-free tests for the custom environments and the old-gym adapter."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from custom_gym_env.custom_env import BasicEnv, SlipperyCorridorEnv, optimal_return
from custom_gym_env.old_gym_api_env import OldGymCorridorEnv
from rlhpc.envs.gym_compat import (
    AdaptedEnvCreator,
    OldGymAPIAdapter,
    check_and_adapt,
    detect_old_api,
    old_api_warning,
    to_gymnasium_space,
)


def strict_check_env(env):
    """check_env with every Gymnasium warning turned into a failure.

    The render check is skipped: it only warns that an env built without
    gymnasium.make() has no spec.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)


def rollout(env, actions, seed=None):
    """Reset with `seed`, play `actions` until the episode ends."""
    obs, _ = env.reset(seed=seed)
    trace = [obs.tolist() if isinstance(obs, np.ndarray) else obs]
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        trace.append((obs.tolist(), reward, terminated, truncated))
        if terminated or truncated:
            break
    return trace


def episode_return(env, policy, seed=None):
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total += reward
        done = terminated or truncated
    return total


# --------------------------------------------------------------------------
# BasicEnv
# --------------------------------------------------------------------------


def test_basic_env_passes_check_env():
    strict_check_env(BasicEnv())


def test_basic_env_reward_semantics():
    env = BasicEnv({})
    assert env.observation_space == spaces.Discrete(2)
    assert env.action_space == spaces.Discrete(5)
    for action in range(5):
        obs, info = env.reset()
        assert (obs, info) == (0, {})
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs == 1
        assert reward == (1.0 if action == 2 else -1.0)
        assert terminated is True and truncated is False
    assert BasicEnv.optimal_return() == 1.0


def test_basic_env_rejects_config_keys():
    with pytest.raises(ValueError, match="'length'"):
        BasicEnv({"length": 3})


# --------------------------------------------------------------------------
# SlipperyCorridorEnv
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", [None, {"length": 2}, {"length": 15, "slip": 0.3}])
def test_corridor_passes_check_env(config):
    strict_check_env(SlipperyCorridorEnv(config))


def test_corridor_defaults_and_spaces():
    env = SlipperyCorridorEnv()
    assert (env.length, env.max_steps, env.slip) == (10, 40, 0.0)
    assert env.action_space == spaces.Discrete(2)
    assert env.observation_space.shape == (1,)
    assert env.observation_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert obs.tolist() == [0.0] and info == {"position": 0}


def test_corridor_truncates_at_max_steps():
    env = SlipperyCorridorEnv({"length": 5, "max_steps": 6})
    trace = rollout(env, [0] * 100, seed=0)  # always left: never reaches goal
    assert len(trace) == 1 + 6
    assert all(step[2] is False for step in trace[1:])  # never terminated
    assert trace[-1][3] is True  # truncated on the last step only
    assert all(step[3] is False for step in trace[1:-1])


def test_corridor_same_seed_same_episode():
    config = {"length": 12, "slip": 0.3}
    actions = [1, 1, 0, 1, 1, 1, 0, 1] * 10
    a = rollout(SlipperyCorridorEnv(config), actions, seed=42)
    b = rollout(SlipperyCorridorEnv(config), actions, seed=42)
    assert a == b
    # Re-seeding the same instance reproduces the episode as well.
    env = SlipperyCorridorEnv(config)
    rollout(env, actions, seed=7)
    assert rollout(env, actions, seed=42) == a


def test_corridor_different_seeds_differ_when_slippery():
    config = {"length": 12, "slip": 0.3}
    actions = [1] * 48
    episodes = {str(rollout(SlipperyCorridorEnv(config), actions, seed=s)) for s in range(5)}
    assert len(episodes) > 1


def test_corridor_without_slip_is_deterministic_across_seeds():
    actions = [1, 0, 1, 1] * 10
    episodes = {str(rollout(SlipperyCorridorEnv({"length": 8}), actions, seed=s)) for s in range(3)}
    assert len(episodes) == 1


@pytest.mark.parametrize(
    "config, key",
    [
        ({"lenght": 10}, "lenght"),  # typo
        ({"length": 1}, "length"),
        ({"length": 2.5}, "length"),
        ({"length": "10"}, "length"),
        ({"length": True}, "length"),
        ({"length": 10, "max_steps": 5}, "max_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"slip": 1.0}, "slip"),
        ({"slip": -0.1}, "slip"),
        ({"slip": "0.1"}, "slip"),
    ],
)
def test_corridor_bad_config_names_the_key(config, key):
    with pytest.raises(ValueError, match=f"'{key}'") as excinfo:
        SlipperyCorridorEnv(config)
    assert "SlipperyCorridorEnv" in str(excinfo.value)


def test_corridor_unknown_key_lists_allowed_keys():
    with pytest.raises(ValueError, match="allowed keys: length, max_steps, slip"):
        SlipperyCorridorEnv({"speed": 2})


def test_corridor_accepts_numpy_numbers():
    env = SlipperyCorridorEnv({"length": np.int64(6), "slip": np.float32(0.25)})
    assert (env.length, env.max_steps) == (6, 24)
    assert isinstance(env.length, int) and isinstance(env.slip, float)


@pytest.mark.parametrize("length", [2, 3, 10, 20])
def test_optimal_return_formula_matches_optimal_rollout(length):
    config = {"length": length}
    expected = 1.0 - 0.1 * (length - 1)
    assert optimal_return(config) == pytest.approx(expected)
    assert SlipperyCorridorEnv.optimal_return(config) == pytest.approx(expected)
    # The hand-rolled optimal policy, "always move right", achieves it ...
    got = episode_return(SlipperyCorridorEnv(config), lambda obs: 1, seed=0)
    assert got == pytest.approx(expected)
    # ... and a policy that wastes steps does worse.
    env = SlipperyCorridorEnv(config)
    worse = episode_return(env, lambda obs: int(env.np_random.random() < 0.8), seed=0)
    assert worse < expected + 1e-9


def test_optimal_return_with_slip_matches_monte_carlo():
    config = {"length": 5, "slip": 0.2, "max_steps": 12}
    exact = optimal_return(config)
    assert exact < optimal_return({"length": 5, "max_steps": 12})  # slipping hurts
    env = SlipperyCorridorEnv(config)
    env.reset(seed=123)
    returns = [episode_return(env, lambda obs: 1) for _ in range(3000)]
    # Always-right is optimal here; 3000 episodes put the mean within ~0.03.
    assert np.mean(returns) == pytest.approx(exact, abs=0.05)


def test_optimal_return_rejects_bad_config():
    with pytest.raises(ValueError, match="'length'"):
        optimal_return({"length": 0})


# --------------------------------------------------------------------------
# Old gym API adapter
# --------------------------------------------------------------------------


class NoSeedOldEnv:
    """Old API, deterministic, no seed() method, no env_config argument."""

    def __init__(self):
        self.observation_space = spaces.Discrete(3)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self):
        self.t = 0
        return 0

    def step(self, action):
        self.t += 1
        done = self.t >= 2
        return min(self.t, 2), float(action), done, {}


class HalfPortedEnv:
    """Gymnasium-style reset, but still a 4-value step."""

    def __init__(self, env_config=None):
        self.observation_space = spaces.Discrete(2)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return 0, {}

    def step(self, action):
        return 1, 1.0, True, {}


class OldTupleObsEnv:
    """Old API whose observations are (int, dict)-shaped tuples."""

    def __init__(self, env_config=None):
        self.observation_space = spaces.Tuple(
            (spaces.Discrete(2), spaces.Dict({"x": spaces.Discrete(2)}))
        )
        self.action_space = spaces.Discrete(2)

    def reset(self):
        return (0, {"x": 0})

    def step(self, action):
        return (1, {"x": 1}), 0.0, True, {}


class BadStepEnv(HalfPortedEnv):
    def step(self, action):
        return 1, 1.0, True


def make_corridor(env_config):
    """A module-level creator function, as a user might register."""
    return SlipperyCorridorEnv(env_config)


def collect():
    messages = []
    return messages, messages.append


def test_detects_old_api():
    env = OldGymCorridorEnv()
    assert detect_old_api(env) == (True, True)
    assert detect_old_api(SlipperyCorridorEnv()) == (False, False)
    assert detect_old_api(HalfPortedEnv()) == (False, True)
    assert detect_old_api(OldTupleObsEnv()) == (True, True)


def test_old_env_is_adapted_with_one_warning(capsys):
    creator = check_and_adapt(OldGymCorridorEnv, {"length": 6})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: OldGymCorridorEnv ")
    assert err.strip() == "warning: " + old_api_warning("OldGymCorridorEnv")
    assert "reset returns obs only" in err and "step returns 4 values" in err
    assert "(obs, reward, terminated, truncated, info)" in err

    assert isinstance(creator, AdaptedEnvCreator)
    # Building envs (as each env runner does) prints nothing more.
    envs = [creator({"length": 6}) for _ in range(3)]
    assert capsys.readouterr().err == ""
    assert all(isinstance(e, OldGymAPIAdapter) for e in envs)
    assert envs[0].env.length == 6


def test_adapted_old_env_passes_check_env():
    messages, warn = collect()
    creator = check_and_adapt(OldGymCorridorEnv, {}, warn=warn)
    assert len(messages) == 1
    strict_check_env(creator({}))


def test_adapted_env_seeding_goes_through_old_seed_method():
    creator = check_and_adapt(OldGymCorridorEnv, {"slip": 0.4}, warn=lambda m: None)
    actions = [1] * 30
    a = rollout(creator({"slip": 0.4}), actions, seed=3)
    b = rollout(creator({"slip": 0.4}), actions, seed=3)
    assert a == b
    seeds = {str(rollout(creator({"slip": 0.4}), actions, seed=s)) for s in range(5)}
    assert len(seeds) > 1


def test_adapter_splits_done_into_terminated_and_truncated():
    creator = check_and_adapt(OldGymCorridorEnv, {}, warn=lambda m: None)
    env = creator({"length": 4, "max_steps": 3, "slip": 0.0})
    # Always left: the time limit ends the episode -> truncated.
    trace = rollout(env, [0] * 10, seed=0)
    assert trace[-1][2:] == (False, True)
    assert len(trace) == 1 + 3
    # Always right: reaching the goal -> terminated.
    trace = rollout(env, [1] * 10, seed=0)
    assert trace[-1][2:] == (True, False)
    assert trace[-1][1] == pytest.approx(0.9)


def test_old_env_without_seed_method_or_config():
    messages, warn = collect()
    creator = check_and_adapt(NoSeedOldEnv, {}, warn=warn)
    assert len(messages) == 1 and "NoSeedOldEnv" in messages[0]
    assert creator.takes_config is False
    env = creator({})
    strict_check_env(env)
    assert env.reset(seed=5) == (0, {})  # seeding without seed(): no error
    assert env.step(1) == (1, 1.0, False, False, {})


def test_a_config_for_an_env_that_takes_none_is_refused():
    with pytest.raises(ValueError, match=r"NoSeedOldEnv takes no config argument, so length, slip would be ignored"):
        check_and_adapt(NoSeedOldEnv, {"length": 20, "slip": 0.1}, warn=lambda message: None)


def test_half_ported_env_warns_about_step_only():
    messages, warn = collect()
    creator = check_and_adapt(HalfPortedEnv, None, warn=warn)
    assert messages == [old_api_warning("HalfPortedEnv", old_reset=False, old_step=True)]
    assert "reset returns obs only" not in messages[0]
    env = creator(None)
    assert env.reset() == (0, {})
    assert env.step(0) == (1, 1.0, True, False, {})


def test_old_tuple_observation_is_not_mistaken_for_obs_info():
    creator = check_and_adapt(OldTupleObsEnv, None, warn=lambda m: None)
    obs, info = creator(None).reset()
    assert obs == (0, {"x": 0}) and info == {}


@pytest.mark.parametrize("env_creator", [SlipperyCorridorEnv, BasicEnv, make_corridor])
def test_new_api_env_passes_through_unchanged(env_creator, capsys):
    messages, warn = collect()
    creator = check_and_adapt(env_creator, {}, warn=warn)
    assert creator is env_creator
    assert messages == []
    creator = check_and_adapt(env_creator, {})  # default warn: stderr
    assert capsys.readouterr() == ("", "")


def test_new_api_env_without_config_parameter():
    class NoConfigEnv(BasicEnv):
        def __init__(self):
            super().__init__()

    messages, warn = collect()
    creator = check_and_adapt(NoConfigEnv, None, warn=warn)
    assert messages == []
    env = creator({"worker": 1})  # what RLlib hands every creator: dropped for an env that takes none
    assert type(env) is NoConfigEnv


def test_bad_env_config_fails_on_the_driver():
    with pytest.raises(ValueError, match="'slip'"):
        check_and_adapt(SlipperyCorridorEnv, {"slip": 2.0})


def test_rejects_instances_and_bad_step():
    with pytest.raises(TypeError, match="not an environment instance"):
        check_and_adapt(SlipperyCorridorEnv(), {})
    with pytest.raises(TypeError):
        check_and_adapt("CartPole-v1", {})
    with pytest.raises(ValueError, match="returned 3"):
        check_and_adapt(BadStepEnv, {})


def test_adapted_creator_pickles():
    creator = check_and_adapt(OldGymCorridorEnv, {}, warn=lambda m: None)
    clone = pickle.loads(pickle.dumps(creator))
    assert isinstance(clone, AdaptedEnvCreator)
    assert (clone.old_reset, clone.old_step) == (True, True)
    env = clone({"length": 3})
    assert isinstance(env, OldGymAPIAdapter) and env.env.length == 3
    # The adapter itself pickles too (Ray may ship env instances around).
    assert isinstance(pickle.loads(pickle.dumps(env)), OldGymAPIAdapter)


def test_old_gym_style_spaces_are_converted():
    class FakeOldDiscrete:  # what a `gym.spaces.Discrete` looks like
        def __init__(self, n):
            self.n = n

    class Discrete(FakeOldDiscrete):
        pass

    class Box:
        def __init__(self):
            self.low, self.high = np.zeros(2), np.ones(2)
            self.shape, self.dtype = (2,), np.float32

    class Dict:
        def __init__(self):
            self.spaces = {"a": Discrete(3), "b": Box()}

    converted = to_gymnasium_space(Dict())
    assert converted == spaces.Dict(
        {"a": spaces.Discrete(3), "b": spaces.Box(0.0, 1.0, (2,), np.float32)}
    )
    same = spaces.Discrete(4)
    assert to_gymnasium_space(same) is same
    with pytest.raises(TypeError, match="FakeOldDiscrete"):
        to_gymnasium_space(FakeOldDiscrete(2))
