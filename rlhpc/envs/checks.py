"""An env's own bugs named before Ray starts: the probe steps it a little and holds what it returns against what it
declares, one line each, naming the env's file.

RLlib meets the same bugs much later and says them as riddles: an observation shaped unlike observation_space is
`ValueError: Output array is the wrong shape` from its connectors, a reward that is not a number fails in a
learner, an env whose episodes never end reports `return -` for ever. Refused here (UserError): what no training
survives. Warned here: what training survives but a researcher wants to know (observations outside the declared
bounds, actions from action_space the env rejects, e.g. masked ones; no episode ended within the steps looked at).
"""

import inspect
import numbers
import os
import time

import numpy as np

from rlhpc.envs.action_masks import random_action
from rlhpc.errors import UserError

# Random steps the probe takes at most, and the wall time it spends at most (a slow simulator gets fewer steps and
# no verdict on its episode length). 1,000 random steps end an episode in every Gymnasium classic-control,
# Box2D and MuJoCo env (their time limits are 200-1,000 steps).
CHECK_STEPS, CHECK_SECONDS = 1000, 0.5


def where(env) -> str:
    """'ClassName (path/to/file.py)' for the env's own class (unwrapped), for the lines below."""
    target = type(getattr(env, "unwrapped", env))
    try:
        path = inspect.getsourcefile(target)
    except (TypeError, OSError):
        path = None
    if path and not os.path.relpath(path).startswith(".."):
        path = os.path.relpath(path)  # the path the user typed, usually
    return f"{target.__name__} ({path or 'built in'})"


def walk(env, warn) -> tuple:
    """Steps a single-agent Gymnasium env with random actions (CHECK_STEPS / CHECK_SECONDS at most) and checks each
    result; -> (mean seconds of a step, steps taken). UserError for a bug, `warn(line)` once for a doubt."""
    space, said = env.observation_space, set()

    def doubt(kind: str, line: str) -> None:
        if kind not in said:
            said.add(kind)
            warn(f"{where(env)}: {line}")

    try:
        obs, _ = env.reset(seed=0)
    except Exception as e:  # noqa: BLE001 -- the env's own error, as one line
        raise UserError(f"{where(env)}: reset() raised {type(e).__name__}: {e}") from None
    check_observation(env, space, obs, "reset()", doubt)
    took, steps, ended = 0.0, 0, False
    while steps < CHECK_STEPS and took < CHECK_SECONDS:
        action = random_action(env.action_space, obs)  # within the action mask, for an env that has one
        started = time.perf_counter()
        try:
            obs, reward, terminated, truncated, _ = env.step(action)
        except Exception as e:  # noqa: BLE001 -- the env's own error, as one line: training may still go on
            doubt("action", f"step() raised {type(e).__name__}: {e} for an action sampled from its action_space "
                            f"({action!r}); RLlib samples every action of that space unless the env masks them")
            return None, 0
        took += time.perf_counter() - started
        steps += 1
        check_reward(env, reward)
        check_observation(env, space, obs, "step()", doubt)
        if terminated or truncated:
            ended = True
            obs, _ = env.reset()
    if not ended and steps >= CHECK_STEPS:
        doubt("end", f"no episode ended within {steps:,} random steps: the 100-episode return stays '-' until one "
                     "does; end episodes (terminated) or cap them (truncated, or gymnasium's max_episode_steps)")
    return (took / steps if steps else None), steps


def check_reward(env, reward) -> None:
    if isinstance(reward, numbers.Real) or (isinstance(reward, np.ndarray) and reward.shape == ()
                                           and np.issubdtype(reward.dtype, np.number)):
        return
    raise UserError(f"{where(env)}: step() returned the reward {reward!r} ({type(reward).__name__}): the reward "
                    "must be one number (a float)")


def check_observation(env, space, obs, call: str, doubt) -> None:
    """A Box observation must have the space's shape (RLlib cannot train otherwise); out of bounds is a doubt."""
    import gymnasium

    if not isinstance(space, gymnasium.spaces.Box):
        try:
            inside = space.contains(obs)
        except Exception:  # noqa: BLE001 -- an observation of another kind altogether: not in the space
            inside = False
        if not inside:
            doubt("space", f"{call} returned an observation that is not in its observation_space {space}")
        return
    try:
        array = np.asarray(obs, dtype=space.dtype)
    except (TypeError, ValueError):
        raise UserError(f"{where(env)}: {call} returned {type(obs).__name__} {obs!r:.60}, not an array of numbers "
                        f"for its observation_space {space}") from None
    if array.shape != space.shape:
        raise UserError(f"{where(env)}: {call} returned an observation of shape {array.shape}, but its "
                        f"observation_space {space} says {space.shape}: make them agree")
    if not space.contains(array):
        low, high = space.low, space.high
        outside = np.flatnonzero((array < low) | (array > high) | np.isnan(array))
        doubt("bounds", f"{call} returned an observation outside its observation_space's bounds (index "
                        f"{outside[:5].tolist()}: {array.flat[outside[0]] if outside.size else '?'}): widen low/high "
                        "or clip it; values far outside the bounds mislead normalization and RLlib's checks")
