"""An env's own bugs, named before Ray starts by the probe the trainer runs (rlhpc.envs.checks): one line each,
naming the env's file. The envs are the bugs a new user's simulator had, as classes in this file."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlhpc.envs import sources
from rlhpc.errors import UserError
from rlhpc.train.trainer import main


class Healthy(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config=None):
        self.t = 0

    def observe(self):
        return np.zeros(3, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observe(), {}

    def step(self, action):
        self.t += 1
        return self.observe(), 1.0, self.t >= 10, False, {}


class WrongShape(Healthy):
    def observe(self):
        return np.zeros(4, np.float32)  # the space says (3,)


class FourValues(Healthy):
    def step(self, action):  # Gymnasium's subclass, the old API's step: `truncated` forgotten
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, info


class TextReward(Healthy):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, "1.0", terminated, truncated, info


class NeverEnds(Healthy):
    def step(self, action):
        obs, reward, _, _, info = super().step(action)
        return obs, reward, False, False, info


class OutOfBounds(Healthy):
    def observe(self):
        return np.full(3, 5.0, np.float32)  # the space says [-1, 1]


class RejectsAnAction(Healthy):
    def step(self, action):
        if action == 1 and self.t:  # a move that is legal at the start only (as a masked env's are)
            raise ValueError("action 1 is not allowed now")
        return super().step(action)


def probe(cls, warnings=None):
    source, creator = sources.find(f"{__file__}:{cls.__name__}")
    return sources.probe(source, creator, {}, warn=(warnings.append if warnings is not None else None))


@pytest.mark.parametrize(("cls", "message"), [
    (WrongShape, "WrongShape (tests/unit/test_env_checks.py): reset() returned an observation of shape (4,), but "
                 "its observation_space Box(-1.0, 1.0, (3,), float32) says (3,): make them agree"),
    (FourValues, "FourValues (tests/unit/test_env_checks.py) subclasses gymnasium.Env, but its step() returns 4 "
                 "values (obs, reward, done, info): Gymnasium's step returns 5"),
    (TextReward, "TextReward (tests/unit/test_env_checks.py): step() returned the reward '1.0' (str): the reward "
                 "must be one number"),
])
def test_an_env_bug_no_training_survives_is_one_line_naming_the_file(cls, message, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[2])  # the file named relative to where the user is
    with pytest.raises(UserError) as refused:
        probe(cls)
    assert str(refused.value).startswith(message), str(refused.value)


@pytest.mark.parametrize(("cls", "doubt"), [
    (NeverEnds, "no episode ended within 1,000 random steps"),
    (OutOfBounds, "reset() returned an observation outside its observation_space's bounds"),
    (RejectsAnAction, "step() raised ValueError: action 1 is not allowed now for an action sampled from its "
                      "action_space"),
])
def test_what_training_survives_is_one_warning(cls, doubt):
    said = []
    probe(cls, said)
    assert len(said) == 1 and doubt in said[0], said


def test_a_healthy_env_passes_silently():
    said = []
    probe(Healthy, said)
    assert said == []


def test_the_trainer_says_the_bug_in_one_line_before_ray(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit) as ended:
        main(["--name-env", f"{__file__}:FourValues", "--print-config"], description="")
    err = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(err) == 1 and "subclasses gymnasium.Env" in err[0], err
