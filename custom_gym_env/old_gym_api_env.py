"""An environment written to the *old* ``gym`` API (gym <= 0.25).

Most environments written for the original tutorial look like this one:

* ``reset()`` takes no arguments and returns only the observation;
* ``step(action)`` returns four values ``(obs, reward, done, info)``, and a
  time limit is reported the way gym's ``TimeLimit`` wrapper did it, with
  ``info["TimeLimit.truncated"] = True``;
* seeding goes through a separate ``seed(seed)`` method.

RLlib on Ray 2.x only accepts the Gymnasium API, so the trainer passes this
class through ``rlhpc.envs.gym_compat.check_and_adapt``, which notices the old API,
prints one warning, and wraps the environment in an adapter.  Compare with
``SlipperyCorridorEnv`` in ``custom_env.py`` to see the same kind of task on
the new API.

This file deliberately does not import ``gym`` (it is not installed, and
gym does not work with NumPy 2); it only *follows* the old API, using
Gymnasium's space classes, which is what a ported project typically has
after replacing ``import gym`` by ``import gymnasium as gym`` and nothing
else.
"""

from __future__ import annotations

import random
from typing import ClassVar

import numpy as np
from gymnasium import spaces


class OldGymCorridorEnv:
    """A short, slightly slippery corridor on the old gym API.

    The agent starts in cell 0 and must reach cell ``length - 1``.  Actions:
    0 = left, 1 = right; with probability ``slip`` the agent moves the other
    way.  Reward -0.1 per step, +1 on reaching the goal.  After ``max_steps``
    steps the episode ends with ``info["TimeLimit.truncated"] = True``.

    env_config keys: ``length`` (default 5), ``max_steps`` (default 20),
    ``slip`` (default 0.1).
    """

    metadata: ClassVar[dict] = {"render.modes": ["human"]}  # old-style metadata key

    def __init__(self, env_config: dict | None = None):
        config = {"length": 5, "max_steps": 20, "slip": 0.1}
        for key, value in (env_config or {}).items():
            if key not in config:
                raise ValueError(
                    f"OldGymCorridorEnv: unknown env_config key {key!r}; "
                    f"allowed keys: {', '.join(sorted(config))}"
                )
            config[key] = value
        self.length = int(config["length"])
        self.max_steps = int(config["max_steps"])
        self.slip = float(config["slip"])

        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        # Old gym environments typically kept their own random generator and
        # re-created it in seed(); Python's `random` keeps this file free of
        # any gym helper.
        self._rng = random.Random()
        self.position = 0
        self.steps = 0

    def seed(self, seed=None):
        """Old API: seeding is a separate call, not an argument of reset()."""
        self._rng = random.Random(seed)
        return [seed]

    def reset(self):
        """Old API: no arguments, returns the observation only."""
        self.position = 0
        self.steps = 0
        return self._obs()

    def step(self, action):
        """Old API: returns (obs, reward, done, info)."""
        move = 1 if action == 1 else -1
        if self._rng.random() < self.slip:
            move = -move
        self.position = min(max(self.position + move, 0), self.length - 1)
        self.steps += 1

        at_goal = self.position == self.length - 1
        reward = -0.1 + (1.0 if at_goal else 0.0)
        info = {}
        done = at_goal
        if not at_goal and self.steps >= self.max_steps:
            # One `done` flag for both endings; the only hint that this was a
            # time limit rather than a real ending is this info key.
            done = True
            info["TimeLimit.truncated"] = True
        return self._obs(), reward, done, info

    def render(self, mode="human"):
        row = ["."] * self.length
        row[-1] = "G"
        row[self.position] = "A"
        print("".join(row))

    def close(self):
        pass

    def _obs(self):
        return np.array([self.position / (self.length - 1)], dtype=np.float32)
