"""Run environments written for the old ``gym`` API under Gymnasium/RLlib.

Ray RLlib 2.x only speaks the Gymnasium API:

================================  ==================================================
old ``gym`` (<= 0.25)             Gymnasium 1.x
================================  ==================================================
``obs = env.reset()``             ``obs, info = env.reset(seed=None, options=None)``
``env.seed(s)``                   ``env.reset(seed=s)``
``obs, r, done, info = step(a)``  ``obs, r, terminated, truncated, info = step(a)``
``info["TimeLimit.truncated"]``   ``truncated``
================================  ==================================================

``check_and_adapt`` builds the environment once on the driver, finds out
which API it follows, and returns an environment creator for
``ray.tune.registry.register_env``.  For an old-API environment that creator
wraps every new instance in ``OldGymAPIAdapter``; a Gymnasium environment is
passed through untouched.  Detection happens once, on the driver, so the
warning is printed once per run instead of once per env runner.

Everything here is module level (no closures), so the creator pickles by
reference and unpickles on any Ray worker that can import ``rlhpc``.

Gymnasium 1.x dropped its own ``EnvCompatibility`` wrapper (it moved to the
``shimmy`` package, which this project does not depend on), hence this small
adapter.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rlhpc.envs import pettingzoo
from rlhpc.envs.action_masks import random_action
from rlhpc.errors import UserError
from rlhpc.errors import warn as _default_warn

__all__ = [
    "AdaptedEnvCreator",
    "OldGymAPIAdapter",
    "check_and_adapt",
    "detect_old_api",
    "old_api_warning",
    "to_gymnasium_space",
]

_TRUNCATED_KEY = "TimeLimit.truncated"


# ---------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------


def to_gymnasium_space(space: Any) -> gym.spaces.Space:
    """Return ``space`` as a Gymnasium space.

    Gymnasium spaces are returned unchanged.  Spaces from the old ``gym``
    package (or look-alikes) are rebuilt from their public attributes,
    because RLlib checks ``isinstance(space, gymnasium.spaces.Space)``.
    """
    if isinstance(space, gym.spaces.Space):
        return space
    kind = type(space).__name__
    if kind == "Discrete":
        return gym.spaces.Discrete(int(space.n), start=int(getattr(space, "start", 0)))
    if kind == "Box":
        return gym.spaces.Box(
            low=np.asarray(space.low, dtype=space.dtype),
            high=np.asarray(space.high, dtype=space.dtype),
            shape=tuple(space.shape),
            dtype=space.dtype,
        )
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(np.asarray(space.nvec), dtype=space.dtype)
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(space.n)
    if kind == "Tuple":
        return gym.spaces.Tuple([to_gymnasium_space(s) for s in space.spaces])
    if kind == "Dict":
        return gym.spaces.Dict(
            {key: to_gymnasium_space(s) for key, s in space.spaces.items()}
        )
    raise TypeError(
        f"cannot convert space {space!r} of type {type(space).__module__}."
        f"{kind} to a Gymnasium space; supported: Discrete, Box, "
        "MultiDiscrete, MultiBinary, Tuple, Dict"
    )


# ---------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------


def _accepts_keyword(func: Callable, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


class OldGymAPIAdapter(gym.Env):
    """Present an old-``gym``-API environment through the Gymnasium API.

    ``reset(seed, options)`` -> ``(obs, info)``: the seed is forwarded to
    ``env.reset(seed=...)`` if the old reset accepts it (gym 0.22-0.25), else
    to ``env.seed(seed)`` if the environment has one.  An environment with
    neither cannot be seeded; it is still usable, only not reproducible.

    ``step(a)`` -> ``(obs, reward, terminated, truncated, info)`` with
    ``truncated = info.get("TimeLimit.truncated", False)`` and
    ``terminated = done and not truncated``.

    ``old_reset`` / ``old_step`` select which half to translate, for
    environments that were only half ported.
    """

    def __init__(self, env: Any, old_reset: bool = True, old_step: bool = True):
        self.env = env
        self.old_reset = old_reset
        self.old_step = old_step
        self.observation_space = to_gymnasium_space(env.observation_space)
        self.action_space = to_gymnasium_space(env.action_space)
        self.metadata = dict(getattr(env, "metadata", None) or {})
        if "render.modes" in self.metadata:  # old gym's name for Gymnasium's render_modes
            self.metadata.setdefault("render_modes", list(self.metadata["render.modes"]))
        self.render_mode = getattr(env, "render_mode", None)
        self._reset_takes_seed = _accepts_keyword(env.reset, "seed")
        self._reset_takes_options = _accepts_keyword(env.reset, "options")

    def _obs(self, obs: Any) -> Any:
        # Old environments often return float64 (or lists) for a float32 Box.
        if isinstance(self.observation_space, gym.spaces.Box):
            return np.asarray(obs, dtype=self.observation_space.dtype)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random, as Gymnasium expects
        kwargs: dict = {}
        if seed is not None:
            if self._reset_takes_seed:
                kwargs["seed"] = seed
            elif callable(getattr(self.env, "seed", None)):
                self.env.seed(seed)
            # else: nothing to seed; the inner env keeps its own randomness.
        if options is not None and self._reset_takes_options:
            kwargs["options"] = options
        result = self.env.reset(**kwargs)
        if self.old_reset:
            obs, info = result, {}
        else:
            obs, info = result
        return self._obs(obs), dict(info or {})

    def step(self, action):
        result = self.env.step(action)
        if self.old_step:
            obs, reward, done, info = result
            info = dict(info or {})
            truncated = bool(info.get(_TRUNCATED_KEY, False))
            terminated = bool(done) and not truncated
        else:
            obs, reward, terminated, truncated, info = result
            info = dict(info or {})
        if self.render_mode == "human":  # Gymnasium envs draw themselves at each step in this mode
            self.render()
        return self._obs(obs), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        render = getattr(self.env, "render", None)
        if not callable(render):
            return None
        # Old gym: the mode is render()'s argument, not the env's attribute.
        return render(mode=self.render_mode) if self.render_mode and _accepts_keyword(render, "mode") else render()

    def close(self):
        close = getattr(self.env, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"OldGymAPIAdapter({self.env!r})"


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


def _reset_is_old(result: Any, observation_space: gym.spaces.Space) -> bool:
    """True if ``reset()`` returned a bare observation instead of (obs, info)."""
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        return True
    # Shaped like (obs, info) -- but an old env with a Tuple(x, Dict)
    # observation space also returns a 2-tuple ending in a dict.  It is old
    # only if the whole tuple, and not its first element, is an observation.
    def contains(x):
        # Probing with a value of the wrong kind makes Gymnasium warn
        # ("Casting input x to numpy array"); that noise is not the user's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return bool(observation_space.contains(x))
            except Exception:  # noqa: BLE001 -- an old env's odd observation type: "not this API"
                return False

    return contains(result) and not contains(result[0])


def detect_old_api(env: Any) -> tuple[bool, bool]:
    """Reset and step ``env`` once; return ``(old_reset, old_step)``.

    ``old_reset``: ``reset()`` returns the observation only.
    ``old_step``: ``step()`` returns 4 values ``(obs, reward, done, info)``.
    The environment is left mid-episode; reset it before use.
    """
    space = to_gymnasium_space(env.observation_space)
    reset = env.reset()
    old_reset = _reset_is_old(reset, space)
    obs = reset if old_reset or not isinstance(reset, tuple) else reset[0]
    # Within the action mask where the observation has one: a masked action may end the episode or raise.
    result = env.step(random_action(to_gymnasium_space(env.action_space), obs))
    if not isinstance(result, tuple) or len(result) not in (4, 5):
        count = len(result) if isinstance(result, tuple) else type(result).__name__
        raise ValueError(
            f"{type(env).__name__}.step() returned {count}; expected 5 values "
            "(obs, reward, terminated, truncated, info) or, on the old gym "
            "API, 4 values (obs, reward, done, info)"
        )
    return old_reset, len(result) == 4


def _half_ported(env: Any, old_reset: bool) -> UserError:
    """A gymnasium.Env subclass on the old API is a bug to fix, not an old env to adapt (adapting would read
    its `truncated` as `done` and its info as nothing)."""
    from rlhpc.envs.checks import where

    if old_reset:
        return UserError(f"{where(env)} subclasses gymnasium.Env, but its reset() returns the observation alone: "
                         "Gymnasium's reset returns (obs, info)")
    return UserError(f"{where(env)} subclasses gymnasium.Env, but its step() returns 4 values (obs, reward, done, "
                     "info): Gymnasium's step returns 5 (obs, reward, terminated, truncated, info)")


def old_api_warning(name: str, old_reset: bool = True, old_step: bool = True) -> str:
    """The warning text for an adapted old-API env (printed as ``warning: <text>``)."""
    found, fixed = [], []
    if old_reset:
        found.append("reset returns obs only")
        fixed.append("reset -> (obs, info)")
    if old_step:
        found.append("step returns 4 values with `done`")
        fixed.append("step -> (obs, reward, terminated, truncated, info)")
    return (
        f"{name} uses the old gym API ({'; '.join(found)}); "
        f"adapting it to Gymnasium ({'; '.join(fixed)})"
    )


# ---------------------------------------------------------------------------
# Creators
# ---------------------------------------------------------------------------


def _takes_config(creator: Callable) -> bool:
    """Can ``creator`` be called with one positional argument (env_config)?

    The original tutorial's ``BasicEnv.__init__(self)`` took no arguments,
    so an env class without a config parameter is called without one.
    """
    try:
        sig = inspect.signature(creator)
    except (TypeError, ValueError):
        return True  # cannot tell (e.g. a C extension): assume the RLlib way
    try:
        sig.bind(None)
    except TypeError:
        return False
    return True


class AdaptedEnvCreator:
    """Picklable ``env_config -> env`` callable for ``register_env``.

    Holds only the original creator (a class or module-level function) and
    three flags, so it pickles by reference and works on remote workers.
    """

    def __init__(
        self,
        env_creator: Callable,
        takes_config: bool = True,
        old_reset: bool = False,
        old_step: bool = False,
    ):
        self.env_creator = env_creator
        self.takes_config = takes_config
        self.old_reset = old_reset
        self.old_step = old_step

    @property
    def adapts(self) -> bool:
        return self.old_reset or self.old_step

    def __call__(self, env_config: dict | None = None):
        env = self.env_creator(env_config) if self.takes_config else self.env_creator()
        if self.adapts:
            env = OldGymAPIAdapter(env, old_reset=self.old_reset, old_step=self.old_step)
        return env

    def __repr__(self) -> str:
        name = getattr(self.env_creator, "__qualname__", repr(self.env_creator))
        return (
            f"AdaptedEnvCreator({name}, takes_config={self.takes_config}, "
            f"old_reset={self.old_reset}, old_step={self.old_step})"
        )


def is_multi_agent(env) -> bool:
    """An RLlib MultiAgentEnv (found by its class, so this module needs no Ray)."""
    return any(cls.__name__ == "MultiAgentEnv" and cls.__module__.startswith("ray.rllib")
               for cls in type(getattr(env, "unwrapped", env)).__mro__)


def _build(env_creator: Callable, env_config: dict | None, takes_config: bool) -> tuple:
    """-> (the env, the creator to register, whether it takes env_config). A function returning a PettingZoo env
    (path/to/file.py:make_env) gets RLlib's wrapper around every env it makes."""
    env = env_creator(env_config) if takes_config else env_creator()
    if pettingzoo.is_pettingzoo_env(env):
        return pettingzoo.to_rllib(env), pettingzoo.FactoryCreator(env_creator, takes_config), True
    return env, env_creator, takes_config


def check_and_adapt(
    env_creator: Callable,
    env_config: dict | None = None,
    *,
    warn: Callable[[str], None] | None = None,
    on_built: Callable[[Any], None] | None = None,
) -> Callable:
    """Return an ``env_config -> gymnasium.Env`` creator for ``env_creator``.

    ``env_creator`` is an environment class or a function taking
    ``env_config`` (or, like the original tutorial's ``BasicEnv``, taking no
    argument).  It is called once with ``env_config``, reset and stepped
    once to detect the API, then closed.  Bad ``env_config`` values
    therefore fail here, on the driver, with the environment's own error;
    a non-empty ``env_config`` for a creator that takes none is a ValueError.

    * Gymnasium API and accepts ``env_config``: ``env_creator`` itself is
      returned, unchanged, and nothing is printed.
    * Gymnasium API, no ``env_config`` parameter: an ``AdaptedEnvCreator``
      that calls it without arguments.
    * Old gym API: an ``AdaptedEnvCreator`` that wraps each new env in
      ``OldGymAPIAdapter``; ``warn`` (default ``rlhpc.errors.warn``, which
      prints ``warning: <text>`` on stderr) is called exactly once with the
      text from ``old_api_warning``.

    ``on_built``, when given, is called with that one env before it is closed
    (rlhpc.envs.sources reads its spaces and times its steps there).
    """
    if not isinstance(env_creator, type) and hasattr(env_creator, "step"):
        raise TypeError(
            "check_and_adapt expects an environment class or creator "
            f"function, not an environment instance: {env_creator!r}"
        )
    if isinstance(env_creator, str) or not callable(env_creator):
        raise TypeError(
            "check_and_adapt expects an environment class or a function "
            f"env_config -> env, got {env_creator!r}"
        )

    takes_config = _takes_config(env_creator)
    if env_config and not takes_config:
        # Silently training on the defaults would look like a run with the asked-for settings.
        name = getattr(env_creator, "__name__", repr(env_creator))
        raise ValueError(f"{name} takes no config argument, so {', '.join(map(str, env_config))} would be "
                         "ignored: give it a `config` parameter, or drop these keys")
    env, env_creator, takes_config = _build(env_creator, env_config, takes_config)
    try:
        # RLlib's MultiAgentEnv is Gymnasium's API by agent (dicts); there is no old-gym form of it to adapt.
        old_reset, old_step = (False, False) if is_multi_agent(env) else detect_old_api(env)
        if isinstance(env, gym.Env) and (old_reset or old_step):
            raise _half_ported(env, old_reset)
        if on_built is not None:  # a look at this build: a slow simulator is not started twice
            on_built(OldGymAPIAdapter(env, old_reset, old_step) if old_reset or old_step else env)
    finally:
        close = getattr(env, "close", None)
        if callable(close):
            close()

    if old_reset or old_step:
        name = getattr(env_creator, "__name__", None)
        if not isinstance(env_creator, type) or not name:
            name = type(env).__name__
        (warn or _default_warn)(old_api_warning(name, old_reset, old_step))
        return AdaptedEnvCreator(env_creator, takes_config, old_reset, old_step)
    if takes_config:
        return env_creator
    return AdaptedEnvCreator(env_creator, takes_config=False)
