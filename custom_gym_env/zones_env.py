"""A building's zones, as a simulator of one would observe them: a table (zones x features), or a Dict of mixed parts.

Researchers' simulators rarely hand out one flat vector: a building gives zones x features, a grid gives buses x
quantities, traffic gives vehicles x attributes. RLlib's default networks take neither a 2-D Box nor a Dict of
mixed parts; the trainer flattens both before Ray starts and says so in its first lines:

    observation Box(4, 2) flattened to 8
    observation Dict('hour': Discrete(24), 'occupied': MultiBinary(4), 'zones': Box(4, 2)) flattened to 36

    python simple_example/simple_trainer.py --name-env custom_gym_env/zones_env.py:ZonesEnv
    python simple_example/simple_trainer.py --name-env custom_gym_env/zones_env.py:ZonesEnv --env-config obs=dict

The task: each step one zone (or none) gets the heater; every zone loses heat to the outside; the reward is minus
the occupied zones' distance from the setpoint. Heating the coldest occupied zone is close to the best policy.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

SETPOINT, OUTSIDE = 21.0, 5.0


class ZonesEnv(gym.Env):
    """env_config: zones (4), steps (48, one episode), obs ("table": Box(zones, 2); "dict": mixed parts)."""

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        unknown = set(config) - {"zones", "steps", "obs"}
        if unknown:
            raise ValueError(f"ZonesEnv: unknown env_config key {sorted(unknown)[0]!r}; allowed: obs, steps, zones")
        self.zones, self.steps, self.obs_format = int(config.get("zones", 4)), int(config.get("steps", 48)), \
            config.get("obs", "table")
        if self.obs_format not in ("table", "dict"):
            raise ValueError(f"ZonesEnv: obs must be 'table' or 'dict', got {self.obs_format!r}")
        table = gym.spaces.Box(-30.0, 30.0, (self.zones, 2), np.float32)  # per zone: deviation, occupied
        self.observation_space = table if self.obs_format == "table" else gym.spaces.Dict(
            {"zones": table, "hour": gym.spaces.Discrete(24), "occupied": gym.spaces.MultiBinary(self.zones)})
        self.action_space = gym.spaces.Discrete(self.zones + 1)  # 0: no heating; i: heat zone i - 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.temperature = self.np_random.uniform(15.0, 24.0, self.zones)
        self.occupied = self.np_random.integers(0, 2, self.zones)
        return self._observation(), {}

    def step(self, action):
        heat = np.zeros(self.zones)
        if action:
            heat[int(action) - 1] = 3.0
        self.temperature += heat - 0.05 * (self.temperature - OUTSIDE)
        self.t += 1
        if self.t % 12 == 0:  # people come and go
            self.occupied = self.np_random.integers(0, 2, self.zones)
        reward = -float(np.sum(self.occupied * np.abs(self.temperature - SETPOINT))) / self.zones
        return self._observation(), reward, False, self.t >= self.steps, {}

    def _observation(self):
        table = np.stack([np.clip(self.temperature - SETPOINT, -30, 30), self.occupied], axis=1).astype(np.float32)
        if self.obs_format == "table":
            return table
        return {"zones": table, "hour": self.t % 24, "occupied": self.occupied.astype(np.int8)}
