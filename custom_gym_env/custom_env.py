"""Custom Gymnasium environments for the RLlib-on-HPC tutorial.

Three examples live here, read them top to bottom like a tutorial page:

1. ``BasicEnv`` -- the environment from the original "Reinforcement Learning
   with Ray/RLlib on Eagle" tutorial, ported from the old ``gym`` API to
   Gymnasium 1.x: two states, five actions, one-step episodes.
2. ``SlipperyCorridorEnv`` -- a slightly richer example that shows what real
   environments need: multi-step episodes, a ``Box`` observation, parameters
   read (and validated) from ``env_config``, seeding through
   ``self.np_random``, and the difference between *terminated* and
   *truncated*.
3. ``SlowCartPole`` -- CartPole whose step costs wall-clock or CPU time, as a
   simulator's does: the env for trying parallel sampling, and a pattern for
   wrapping a real simulator.

All classes take a single ``env_config`` argument because that is how RLlib
builds environments on every worker: it calls ``creator(env_config)`` with an
``EnvContext`` (a ``dict`` subclass holding the user's settings).

The first two also have ``optimal_return(env_config)``, the best achievable
episode return, and ``SlowCartPole`` has CartPole's ``reward_threshold``, so
tests and training scripts can check that an agent has really learned the task.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np


def _check_keys(env_name: str, env_config: dict | None, allowed: dict) -> dict:
    """Merge ``env_config`` over the defaults in ``allowed``.

    A typo in a config key (``lenght=20``) would otherwise be silently
    ignored and the run would train on the default task, so unknown keys are
    an error that lists the keys the environment understands.
    """
    config = dict(env_config or {})
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) if allowed else "none"
        raise ValueError(
            f"{env_name}: unknown env_config key {unknown[0]!r}; "
            f"allowed keys: {allowed_text}"
        )
    return {**allowed, **config}


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but `length=True` is certainly a mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ---------------------------------------------------------------------------
# Part 1: BasicEnv, the tutorial environment on the Gymnasium API
# ---------------------------------------------------------------------------


class BasicEnv(gym.Env):
    """Two states (0 = start, 1 = final) and five actions (0-4).

    Every episode is a single step: action 2 earns +1, any other action -1.
    The best possible episode return is therefore +1.
    """

    def __init__(self, env_config: dict | None = None):
        # BasicEnv has no parameters; refuse any so that a mistaken
        # `--env-config` is reported instead of ignored.
        _check_keys("BasicEnv", env_config, allowed={})
        self.action_space = gym.spaces.Discrete(5)  # actions 0, 1, 2, 3, 4
        self.observation_space = gym.spaces.Discrete(2)  # states 0 and 1

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # Gymnasium: reset takes `seed` and `options` and returns (obs, info).
        # super().reset(seed=seed) seeds self.np_random; BasicEnv never uses
        # randomness, but calling it is what makes `reset(seed=...)` work the
        # same way for every Gymnasium environment.
        super().reset(seed=seed)
        state = 0
        return state, {}

    def step(self, action):
        state = 1
        reward = 1.0 if action == 2 else -1.0
        # Gymnasium splits the old `done` flag in two:
        #   terminated -- the task itself ended (here: always, after one step);
        #   truncated  -- the episode was cut short from outside (time limit).
        terminated = True
        truncated = False
        info = {}
        return state, reward, terminated, truncated, info

    @staticmethod
    def optimal_return(env_config: dict | None = None) -> float:
        """Best episode return: always pick action 2 -> +1."""
        _check_keys("BasicEnv", env_config, allowed={})
        return 1.0


# ---------------------------------------------------------------------------
# Part 2: SlipperyCorridorEnv, a multi-step, configurable, seeded example
# ---------------------------------------------------------------------------


class SlipperyCorridorEnv(gym.Env):
    """Walk right along a corridor of ``length`` cells to reach the goal.

    The agent starts in cell 0 and the goal is cell ``length - 1``.

    * Actions: ``Discrete(2)``; 0 = move left, 1 = move right.  Moving left
      in cell 0 leaves the agent where it is.
    * Observation: ``Box(0, 1, shape=(1,), float32)``, the position divided
      by ``length - 1``.  Scaling to [0, 1] keeps the input of the policy
      network the same size whatever the corridor length.
    * Reward: -0.1 for every step (so shorter paths are better) plus +1.0 on
      the step that reaches the goal.
    * With probability ``slip`` the floor is slippery and the agent moves the
      opposite way to the one it chose.  The slip draws use ``self.np_random``
      so an episode is reproducible from its seed.
    * The episode *terminates* at the goal and is *truncated* after
      ``max_steps`` steps.

    env_config keys (all optional):

    ``length``     int >= 2, default 10: number of cells.
    ``max_steps``  int >= length - 1, default 4 * length: time limit.
    ``slip``       float in [0, 1), default 0.0: probability of slipping.

    Optimal return.  Without slipping the best policy walks right
    ``length - 1`` times, so the optimum is ``1 - 0.1 * (length - 1)``
    (0.1 for the default length 10).  With ``slip > 0`` the optimum is an
    expectation; ``optimal_return`` computes it exactly by dynamic
    programming over the finite horizon.
    """

    STEP_REWARD = -0.1
    GOAL_REWARD = 1.0
    DEFAULTS: ClassVar[dict] = {"length": 10, "max_steps": None, "slip": 0.0}

    def __init__(self, env_config: dict | None = None):
        config = self.parse_config(env_config)
        self.length: int = config["length"]
        self.max_steps: int = config["max_steps"]
        self.slip: float = config["slip"]

        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Box(
            low=0.0, high=1.0, shape=(1,), dtype=np.float32
        )
        self.position = 0
        self.steps = 0

    @classmethod
    def parse_config(cls, env_config: dict | None) -> dict:
        """Validate ``env_config`` and fill in defaults.

        Errors name the offending key and the accepted range, because on a
        cluster the message in the job log is often all the user gets.
        """
        name = cls.__name__
        config = _check_keys(name, env_config, allowed=cls.DEFAULTS)

        length = config["length"]
        if not _is_int(length) or length < 2:
            raise ValueError(
                f"{name}: env_config['length'] must be an integer >= 2, "
                f"got {length!r}"
            )
        length = int(length)

        max_steps = config["max_steps"]
        if max_steps is None:
            max_steps = 4 * length
        elif not _is_int(max_steps) or max_steps < length - 1:
            raise ValueError(
                f"{name}: env_config['max_steps'] must be an integer >= "
                f"length - 1 = {length - 1} (otherwise the goal cannot be "
                f"reached), got {max_steps!r}"
            )
        max_steps = int(max_steps)

        slip = config["slip"]
        if not _is_real(slip) or not 0.0 <= slip < 1.0:
            raise ValueError(
                f"{name}: env_config['slip'] must be a number in [0, 1), "
                f"got {slip!r}"
            )

        return {"length": length, "max_steps": max_steps, "slip": float(slip)}

    def _obs(self) -> np.ndarray:
        # The dtype must match the Box (float32); a float64 array would make
        # Gymnasium's checker complain and cost a conversion in RLlib.
        return np.array([self.position / (self.length - 1)], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # Seeds self.np_random when a seed is given; with seed=None the
        # generator keeps going, so consecutive episodes differ.
        super().reset(seed=seed)
        self.position = 0
        self.steps = 0
        return self._obs(), {"position": self.position}

    def step(self, action):
        move = 1 if action == 1 else -1
        # Draw from self.np_random only when the corridor is slippery, so a
        # slip=0 corridor makes no random draws at all.
        if self.slip > 0.0 and self.np_random.random() < self.slip:
            move = -move
        self.position = min(max(self.position + move, 0), self.length - 1)
        self.steps += 1

        terminated = self.position == self.length - 1
        reward = self.STEP_REWARD + (self.GOAL_REWARD if terminated else 0.0)
        # The time limit is a truncation, not a termination: the agent did
        # not fail, we just stopped watching.  RLlib bootstraps the value of
        # the last observation for truncated episodes but not terminated ones.
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, {"position": self.position}

    @classmethod
    def optimal_return(cls, env_config: dict | None = None) -> float:
        """Best expected episode return for this ``env_config``.

        ``1 - 0.1 * (length - 1)`` when ``slip == 0``; otherwise the exact
        finite-horizon optimum, by backward induction over (steps left,
        position).
        """
        config = cls.parse_config(env_config)
        length, horizon, slip = config["length"], config["max_steps"], config["slip"]
        if slip == 0.0:
            return cls.GOAL_REWARD + cls.STEP_REWARD * (length - 1)

        goal = length - 1
        # value[p] = best expected return from position p with k steps left.
        value = np.zeros(length)
        for _ in range(horizon):
            new_value = np.zeros(length)  # the goal cell is absorbing: 0
            for p in range(goal):
                best = -np.inf
                for move in (-1, 1):
                    expected = 0.0
                    for actual, prob in ((move, 1.0 - slip), (-move, slip)):
                        q = min(max(p + actual, 0), goal)
                        reward = cls.STEP_REWARD + (cls.GOAL_REWARD if q == goal else 0.0)
                        expected += prob * (reward + value[q])
                    best = max(best, expected)
                new_value[p] = best
            value = new_value
        return float(value[0])


def optimal_return(env_config: dict | None = None) -> float:
    """Module-level shortcut for ``SlipperyCorridorEnv.optimal_return``."""
    return SlipperyCorridorEnv.optimal_return(env_config)


# ---------------------------------------------------------------------------
# Part 3: SlowCartPole, an env whose step costs time, as a simulator's does
# ---------------------------------------------------------------------------


class SlowCartPole(gym.Env):
    """CartPole's dynamics (so "solved" is known: 195 over 200 steps, as CartPole-v0) with a step that costs time.

    Real simulators (buildings, grids, traffic) spend milliseconds per step, often waiting on an external
    program; that is where parallel sampling pays. Two costs, set with env_config:

    * ``step_ms``: wall-clock time that uses no CPU (a sleep, as a call to an external simulator waits);
    * ``cpu_ms``: busy work on this core (a simulator computing in-process);
    * ``max_steps``: the episode's time limit (default 200, CartPole-v0's).

    To wrap your own simulator, keep this shape: build the connection in ``__init__`` from ``env_config``,
    start an episode in ``reset``, advance it in ``step``, release it in ``close``.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 50}
    DEFAULTS: ClassVar[dict] = {"step_ms": 0.0, "cpu_ms": 0.0, "max_steps": 200}

    def __init__(self, env_config: dict | None = None):
        from gymnasium.envs.classic_control import CartPoleEnv

        config = _check_keys("SlowCartPole", env_config, self.DEFAULTS)
        for key in ("step_ms", "cpu_ms"):
            if not _is_real(config[key]) or not 0 <= config[key] <= 60_000:
                raise ValueError(f"SlowCartPole: {key} must be a number of milliseconds in [0, 60000], "
                                 f"got {config[key]!r}")
        if not _is_int(config["max_steps"]) or config["max_steps"] < 1:
            raise ValueError(f"SlowCartPole: max_steps must be a whole number >= 1, got {config['max_steps']!r}")
        self.step_s, self.cpu_s = config["step_ms"] / 1000, config["cpu_ms"] / 1000
        self.max_steps = config["max_steps"]
        self.render_mode = None
        self._cartpole = CartPoleEnv(render_mode="rgb_array")
        self.observation_space = self._cartpole.observation_space
        self.action_space = self._cartpole.action_space
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._steps = 0
        return self._cartpole.reset(seed=seed, options=options)

    def step(self, action):
        import time

        if self.step_s:
            time.sleep(self.step_s)
        if self.cpu_s:
            deadline = time.perf_counter() + self.cpu_s
            while time.perf_counter() < deadline:
                pass
        obs, reward, terminated, _, info = self._cartpole.step(action)
        self._steps += 1
        return obs, reward, terminated, self._steps >= self.max_steps, info

    def render(self):
        return self._cartpole.render()

    def close(self):
        self._cartpole.close()

    @classmethod
    def reward_threshold(cls, env_config: dict | None = None) -> float:
        """CartPole's "solved": 97.5 % of the time limit (195 of CartPole-v0's 200)."""
        return 0.975 * _check_keys("SlowCartPole", env_config, cls.DEFAULTS)["max_steps"]
