"""A multi-agent env for the RLlib-on-HPC tutorial: two agents that must meet.

``RendezvousEnv`` is an RLlib ``MultiAgentEnv``, the shape of many simulators our users bring (buildings in a
district, inverters on a feeder, turbines in a farm): several agents act at once, each sees its own
observation and gets its own reward.

Two agents start at the two ends of a corridor of ``length`` cells. Each step both choose left, stay or
right; each pays ``step_cost``; when they meet (the same cell, or they cross) each gets +1 and the episode
ends. The fastest meeting has both walking towards each other, so neither can do it alone: if one waits,
the other walks twice as far. Both agents have the same spaces, and their observations are (own position,
the other's position), so one shared policy can play either side.

    python custom_gym_env/custom_env_trainer.py --name-env RendezvousEnv                    # one shared policy
    python custom_gym_env/custom_env_trainer.py --name-env RendezvousEnv --policies per-agent

``optimal_return(env_config)`` is the best total (summed over agents) return: RLlib's episode return, the
one the trainer reports and stops on.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

LEFT, STAY, RIGHT = 0, 1, 2


class RendezvousEnv(MultiAgentEnv):
    DEFAULTS = {"length": 7, "step_cost": 0.1, "max_steps": 20}

    def __init__(self, env_config: dict | None = None):
        super().__init__()
        config = dict(self.DEFAULTS)
        unknown = sorted(set(env_config or {}) - set(config))
        if unknown:
            raise ValueError(f"RendezvousEnv: unknown env_config key {unknown[0]!r}; allowed keys: "
                             f"{', '.join(sorted(config))}")
        config.update(env_config or {})
        if not isinstance(config["length"], int) or config["length"] < 2:
            raise ValueError(f"RendezvousEnv: length must be an integer >= 2, got {config['length']!r}")
        self.length, self.step_cost, self.max_steps = config["length"], config["step_cost"], config["max_steps"]
        self.agents = self.possible_agents = ["agent_0", "agent_1"]
        # Positions scaled to [0, 1]: own first, then the other's.
        space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_spaces = {agent: space for agent in self.agents}
        self.action_spaces = {agent: gym.spaces.Discrete(3) for agent in self.agents}
        self.positions = {}
        self.steps = 0

    @classmethod
    def optimal_return(cls, env_config: dict | None = None) -> float:
        """Both walk towards each other: they meet after ceil((length - 1) / 2) steps; the sum of both returns."""
        config = {**cls.DEFAULTS, **(env_config or {})}
        steps = math.ceil((config["length"] - 1) / 2)
        return 2 * (1.0 - config["step_cost"] * steps)

    def _observations(self) -> dict:
        scale = self.length - 1
        a, b = self.positions["agent_0"], self.positions["agent_1"]
        return {"agent_0": np.array([a / scale, b / scale], dtype=np.float32),
                "agent_1": np.array([b / scale, a / scale], dtype=np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.positions = {"agent_0": 0, "agent_1": self.length - 1}
        self.steps = 0
        return self._observations(), {}

    def step(self, action_dict: dict):
        before = dict(self.positions)
        for agent, action in action_dict.items():
            move = {LEFT: -1, STAY: 0, RIGHT: 1}[int(action)]
            self.positions[agent] = min(self.length - 1, max(0, self.positions[agent] + move))
        self.steps += 1
        a, b = self.positions["agent_0"], self.positions["agent_1"]
        met = a == b or (a - b) * (before["agent_0"] - before["agent_1"]) < 0  # the same cell, or crossed
        reward = (1.0 if met else 0.0) - self.step_cost
        rewards = {agent: reward for agent in self.agents}
        truncated = not met and self.steps >= self.max_steps
        return (self._observations(), rewards, {"__all__": met}, {"__all__": truncated}, {})
