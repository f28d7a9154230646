"""An env with an action mask: a dispatcher that must never send a job to a busy machine.

Many scheduling, grid and board-game envs forbid some actions at some steps (PettingZoo's classic games mark the
occupied squares). They say so in the observation, a Dict

    {"observation": <what the agent sees>, "action_mask": Box(0, 1, (n_actions,), int8)}

with 1 for the actions allowed now. The trainer finds the mask and trains a policy that never picks a masked action
(rlhpc.algo.action_masking); `python -m rlhpc.evaluate` plays it with the same mask.

``MaskedDispatchEnv``: each step a job arrives; it runs best on one of ``n_machines`` machines (its own machine, shown
in the observation, and always free) and the others are each busy with probability ``p_busy``. Sending the job to its
own machine pays +1, to another free machine 0; sending it to a busy machine ends the episode with ``-penalty``.
Episodes are truncated after ``max_steps`` jobs, so the best return is ``max_steps``. A random policy sends about
40% of its jobs to busy machines with the defaults, and so ends most episodes in a few steps.

With ``strict=True`` a busy machine is an error (ValueError) instead of a penalty: a run that ever picks a masked
action fails, which is what the tests use to prove that none is picked.
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import gymnasium as gym
import numpy as np


class MaskedDispatchEnv(gym.Env):
    """Observation: {"observation": Box(0, 1, (2, n_machines)), "action_mask": Box(0, 1, (n_machines,), int8)}.

    Row 0 of the observation is the job's own machine (one-hot), row 1 which machines are free; a 2-D Box, as a
    grid or a table of machines x features would be. Action: the machine, Discrete(n_machines).
    """

    DEFAULTS: ClassVar[dict] = {"n_machines": 5, "p_busy": 0.5, "max_steps": 20, "penalty": 10.0, "strict": False}

    def __init__(self, env_config: dict | None = None):
        config = self.parse_config(env_config)
        self.n: int = config["n_machines"]
        self.p_busy: float = config["p_busy"]
        self.max_steps: int = config["max_steps"]
        self.penalty: float = config["penalty"]
        self.strict: bool = config["strict"]
        self.action_space = gym.spaces.Discrete(self.n)
        self.observation_space = gym.spaces.Dict({
            "observation": gym.spaces.Box(0.0, 1.0, (2, self.n), np.float32),
            "action_mask": gym.spaces.Box(0, 1, (self.n,), np.int8),
        })
        self.job_machine, self.free, self.steps, self.illegal = 0, np.ones(self.n, np.int8), 0, 0

    @classmethod
    def parse_config(cls, env_config: dict | None) -> dict:
        """Unknown keys and bad values are errors that name the key: a typo would otherwise train the default task."""
        config = dict(env_config or {})
        unknown = sorted(set(config) - set(cls.DEFAULTS))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown env_config key {unknown[0]!r}; allowed keys: "
                             f"{', '.join(sorted(cls.DEFAULTS))}")
        config = {**cls.DEFAULTS, **config}
        checks = {
            "n_machines": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
            "p_busy": (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]"),
            "max_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "penalty": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
            "strict": (lambda v: isinstance(v, bool), "true or false"),
        }
        for key, (ok, what) in checks.items():
            if not ok(config[key]):
                raise ValueError(f"{cls.__name__}: env_config[{key!r}] must be {what}, got {config[key]!r}")
        return config

    @classmethod
    def optimal_return(cls, env_config: dict | None = None) -> float:
        """Every job to its own machine (always free): +1 for each of max_steps jobs."""
        return float(cls.parse_config(env_config)["max_steps"])

    def _new_job(self) -> None:
        self.job_machine = int(self.np_random.integers(self.n))
        self.free = (self.np_random.random(self.n) >= self.p_busy).astype(np.int8)
        self.free[self.job_machine] = 1  # a job's own machine is always free: there is always a legal action

    def _obs(self) -> dict:
        grid = np.zeros((2, self.n), np.float32)
        grid[0, self.job_machine] = 1.0
        grid[1] = self.free
        return {"observation": grid, "action_mask": self.free.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.steps, self.illegal = 0, 0
        self._new_job()
        return self._obs(), {"illegal_actions": 0}

    def step(self, action):
        action = int(action)
        self.steps += 1
        if not self.free[action]:
            if self.strict:
                raise ValueError(f"MaskedDispatchEnv: action {action} is masked (machine busy; mask {self.free})")
            self.illegal += 1
            return self._obs(), -self.penalty, True, False, {"illegal_actions": self.illegal}
        reward = 1.0 if action == self.job_machine else 0.0
        self._new_job()
        return self._obs(), reward, False, self.steps >= self.max_steps, {"illegal_actions": self.illegal}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
