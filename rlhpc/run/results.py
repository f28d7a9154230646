"""The names of the result metrics and the helpers that read them (no Ray: also for evaluate, compare, tests).

A training result is Tune's/RLlib's nested dict (`result["env_runners"]["episode_return_mean_100"]`);
progress.csv holds the same keys flattened with "/". Everything that reads a return, a step count or the
stop reward takes it from here, so the trainer, its two backends, search, compare and evaluate agree.
"""

import math
import numbers
from collections.abc import Mapping

# The mean return of the last 100 episodes (rlhpc.algo.metrics); RLlib's own episode_return_mean
# averages one iteration's episodes only.
RETURN_METRIC = "env_runners/episode_return_mean_100"
LEGACY_RETURN_METRIC = "env_runners/episode_reward_mean"  # the legacy stack's name (tf2)
RETURN_KEYS = ("episode_return_mean_100", "episode_reward_mean", "episode_return_mean")  # under env_runners/
STEPS_METRIC = "num_env_steps_sampled_lifetime"
# --eval-interval: the last greedy evaluation's mean return (NaN before the first), and the best so far
# (rlhpc.algo.metrics); --stop-on eval stops on the first.
EVAL_RETURN_METRIC = "evaluation_return"
BEST_EVAL_RETURN_METRIC = "evaluation_return_best"
RETURN_STOP_KEYS = (RETURN_METRIC, LEGACY_RETURN_METRIC, EVAL_RETURN_METRIC)
BEST_CHECKPOINT = "best_checkpoint"  # in the trial dir, beside checkpoint_*: the best evaluation's
BEST_RECORD = "rlhpc_best.json"  # in it: the iteration and evaluation return it was saved at


def as_number(value):
    """The value if it is a real number (not a bool, not NaN), else None: what can be ranked or plotted."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    return value if is_number else None


def episode_return(result: dict):
    """The 100-episode mean return of a result (the legacy stack's own mean for tf2), None before any episode."""
    runners = result.get("env_runners", {})
    value = next((runners[k] for k in RETURN_KEYS if runners.get(k) is not None), None)
    return as_number(value)


def env_steps(result: dict) -> int:
    value = result.get(STEPS_METRIC)
    if value is None:  # legacy API stack
        value = result.get("env_runners", {}).get(STEPS_METRIC, result.get("timesteps_total", 0))
    return int(value or 0)


def target_reward(stop: Mapping):
    """The stop reward among the stop criteria, or None when the run stops on something else only."""
    return next((stop[key] for key in RETURN_STOP_KEYS if key in stop), None)


def reached(result: dict, stop: Mapping) -> bool:
    """Whether the result's return (training, or evaluation under --stop-on eval) reached the stop reward."""
    target = target_reward(stop)
    ret = as_number((result or {}).get(EVAL_RETURN_METRIC)) if EVAL_RETURN_METRIC in stop else \
        episode_return(result or {})
    return target is not None and ret is not None and ret >= target


def flatten(result: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a/b': 1}: progress.csv's and the stop criteria's keys (Tune's flatten_dict, Ray-free)."""
    flat = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def stop_reached(result: dict, stop: Mapping) -> bool:
    """Whether any stop criterion ({flattened key: value}) is met, as Tune's dict stopper decides."""
    flat = flatten(result)
    return any(flat.get(key) is not None and flat[key] >= value for key, value in stop.items())


def ended(result: dict, stop: Mapping) -> bool:
    """Whether a trial, by its last result, has nothing left to train: it met a stop criterion, or Tune ended it by a
    decision (its scheduler's early stop: Tune marks the last result done then, not when a signal interrupts it)."""
    return bool(result.get("done")) or stop_reached(result, stop)


def checkpoint_due(result: dict, every: int) -> bool:
    """Whether --checkpoint-freq asks for a checkpoint after this result: decided here for both backends (the
    in-process loop, and Tune through rlhpc.train.tune_run.PeriodicCheckpoints)."""
    return bool(every) and result.get("training_iteration", 0) % every == 0
