"""The mean return of the last 100 episodes, where an iteration's time went (sampling vs learning), env copies
rebuilt, and an end to training when no env runner is left or no sample came.

RLlib 2.60's `env_runners/episode_return_mean` averages only the episodes that ended in the
last iteration (its windowed stats are emptied at every reduce), so on CartPole one lucky
500-step episode can report "solved". Every env runner logs each episode's return; the
algorithm keeps the last 100 and reports their mean as `env_runners/episode_return_mean_100`,
the column the stop reward, the progress line and the summary use.

The window goes into every checkpoint (Tune's and the in-process trainer's alike) through the
algorithm's MetricsLogger, whose state RLlib saves and restores: a resumed run goes on averaging
the same episodes instead of judging "solved" on its first few.

Multi-agent envs: the episode return is the sum over agents (RLlib's), the one the stop reward reads; each
policy's share (its agents' returns) gets a window of the same episodes, `env_runners/policy_return_mean_100/<id>`.

Evaluation (--eval-interval): RLlib plays greedy episodes on its evaluation env runner every N iterations;
the callback reports the last evaluation's mean return as `evaluation_return` (NaN before the first; the
stop key of --stop-on eval) and the best as `evaluation_return_best`, and saves the algorithm to
`<trial>/best_checkpoint` whenever an evaluation beats the best: beside the checkpoint_* dirs, so no rotation
deletes it. Both values travel in checkpoints, so a resumed run keeps the best it had.

Where the time goes: RLlib's timers (`timers/env_runner_sampling_timer`, `timers/learner_update_timer`) are
exponential moving averages (coefficient 0.01), so after a few iterations they say little about this one. The
callback inverts the average to get this iteration's seconds, reported as `time_sampling_s` and
`time_learning_s` beside `time_this_iter_s`: exact where an iteration is one training step (PPO), an
estimate where it is several (DQN). DQN (and SAC, TQC) time each of the many learner updates of a training step,
none before learning starts: the number of updates is read from the steps trained (timer_pushes); counted as one
per training step, the estimate read `learning 0.0 s` for a 2.5 s iteration. The previous averages travel in
checkpoints like the window.

Env copies that crashed or hung (rlhpc.envs.guard, which rebuilds them) are counted per iteration as
`env_runners/env_restarts` and `env_runners/env_timeouts`, and their cut-short episodes are left out of the window.
An iteration that collected no env steps at all ends training (no_samples) rather than reporting 0 steps for ever.

All of it is per trial, kept in a TrialState that the callback owns: RLlib makes one callback object per algorithm
(and per env runner, where only on_episode_end runs), so in whichever process a trial trains, its state is there.

Private APIs used here, and why: Tune's `Trainable._storage` (its `trial_fs_path`), the trial's dir under the
storage path, where the best checkpoint goes in a Tune actor. A class Trainable has no public accessor for it
(`tune.get_context()` serves function trainables); the in-process backend sets the dir itself.
"""

import dataclasses
import json
import math
import numbers
import os
import shutil
from collections import deque

from ray.rllib.callbacks.callbacks import RLlibCallback

from rlhpc.algo.quiet import quiet_rllib_noise
from rlhpc.algo.runner_errors import last_failure, record_in_this_process
from rlhpc.envs.guard import RESTART_INFO, TIMEOUT_INFO
from rlhpc.envs.multi_agent import policy_returns
from rlhpc.run.results import (
    BEST_CHECKPOINT,
    BEST_EVAL_RETURN_METRIC,
    BEST_RECORD,
    EVAL_RETURN_METRIC,
    RETURN_METRIC,
    as_number,
)

WINDOW = 100
ENV_RESTARTS, ENV_TIMEOUTS = "env_restarts", "env_timeouts"  # env copies rebuilt in an iteration (rlhpc.envs.guard)
RETURNS_THIS_ITERATION = "rlhpc_episode_returns"  # raw per-episode list; removed from the result
RETURN_LAST_100 = RETURN_METRIC.removeprefix("env_runners/")
SAVED_WINDOW = "rlhpc_last_returns"  # the window as a list, in the algorithm's MetricsLogger
POLICY_RETURNS_THIS_ITERATION = "rlhpc_policy_returns"  # multi-agent: {policy: per-episode list}; removed
POLICY_RETURN_LAST_100 = "policy_return_mean_100"  # {policy: mean of its share of the last 100 episodes}
SAVED_POLICY_WINDOWS = "rlhpc_last_policy_returns"
SAVED_EVALUATION = "rlhpc_evaluation"  # [last, best] evaluation return
# This iteration's seconds, from RLlib's averaged timers: result key -> timer under result["timers"].
SPLIT_TIMERS = {"time_sampling_s": "env_runner_sampling_timer", "time_learning_s": "learner_update_timer"}
RLLIB_EMA_COEFF = 0.01  # MetricsLogger.log_time's default (ray/rllib/utils/metrics/stats/ema.py)
SAVED_TIMERS = "rlhpc_last_timers"  # the averages seen last iteration, in the algorithm's MetricsLogger


@dataclasses.dataclass
class TrialState:
    """What the callback remembers of its trial between iterations (and, through the MetricsLogger, checkpoints)."""

    returns: deque = dataclasses.field(default_factory=lambda: deque(maxlen=WINDOW))  # the last 100 episodes'
    policy_returns: dict = dataclasses.field(default_factory=dict)  # multi-agent: {policy: its window}
    evaluation: dict = dataclasses.field(default_factory=lambda: {"last": math.nan, "best": math.nan})
    timers: dict = dataclasses.field(default_factory=dict)  # RLlib's timer averages seen last iteration
    trial_dir: str | None = None  # where the best checkpoint goes (None: the Tune trial's, found when needed)


def trial_state(algorithm):
    """The TrialState of the algorithm's ReturnOverLast100Episodes (None: it has none, e.g. the legacy stack)."""
    callbacks = algorithm.callbacks if isinstance(algorithm.callbacks, list) else [algorithm.callbacks]
    return next((c.state for c in callbacks if isinstance(c, ReturnOverLast100Episodes)), None)


def as_list(values) -> list:
    """RLlib unwraps a list of one, and reduces an empty one to NaN."""
    if isinstance(values, numbers.Real):
        return [] if math.isnan(values) else [values]
    return list(values or [])


def trial_dir(algorithm, state: TrialState):
    """Where the trial writes: set by the in-process backend; the trial's dir under --storage-path in a Tune
    actor (a shared file system on a cluster, as the trainer requires)."""
    if state.trial_dir:
        return state.trial_dir
    storage = getattr(algorithm, "_storage", None)  # Tune's StorageContext of the trial
    path = getattr(storage, "trial_fs_path", None)
    return path if path and os.path.isdir(os.path.dirname(path)) else None  # on a file system this node sees


def save_best(algorithm, state: TrialState, value: float) -> None:
    """The algorithm as <trial>/best_checkpoint, replaced whole (saved beside, then renamed)."""
    where = trial_dir(algorithm, state)
    if not where:
        return
    target = os.path.join(where, BEST_CHECKPOINT)
    saving = target + ".saving"
    shutil.rmtree(saving, ignore_errors=True)
    algorithm.save_to_path(saving)
    with open(os.path.join(saving, BEST_RECORD), "w") as f:
        json.dump({"training_iteration": algorithm.iteration, "evaluation_return": value}, f)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(saving, target)


def keep_best(algorithm, state: TrialState, result: dict) -> None:
    if not algorithm.config.evaluation_interval:
        return
    seen = state.evaluation
    # RLlib evaluates in the iterations that are multiples of the interval, and repeats the last evaluation's
    # results in the others: only a fresh one counts.
    fresh = algorithm.iteration % algorithm.config.evaluation_interval == 0
    value = as_number(((result.get("evaluation") or {}).get("env_runners") or {}).get("episode_return_mean")) \
        if fresh else None
    if value is not None:
        seen["last"] = value
        if not seen["best"] >= value:  # NaN (none yet) or better
            seen["best"] = value
            save_best(algorithm, state, value)
    # From the first row (progress.csv's columns are fixed by it), NaN where no evaluation ran.
    result[EVAL_RETURN_METRIC] = math.nan if value is None else value
    result[BEST_EVAL_RETURN_METRIC] = seen["best"]
    algorithm.metrics.log_value(SAVED_EVALUATION, [seen["last"], seen["best"]], reduce="item")


def this_iteration(average: float, previous, pushes: int) -> float:
    """Undo RLlib's EMA: `pushes` equal values moved the average from `previous` to `average`; their sum."""
    if previous is None or not pushes:
        return average * max(pushes, 1)  # the first value is the average itself
    kept = (1 - RLLIB_EMA_COEFF) ** pushes
    return max(0.0, (average - kept * previous) / (1 - kept)) * pushes


def timer_pushes(config, result: dict) -> dict:
    """timer -> how many times RLlib timed it in this iteration (its average moved that many steps). PPO: once
    per training step each. DQN and its subclasses (SAC, TQC), whose training step samples `store` times and, once
    learning has started, updates the learner `train` times (calculate_rr_weights, from training_intensity): the
    updates are counted from the steps trained this iteration, one train batch each (0 before learning starts)."""
    steps = int(result.get("num_training_step_calls_per_iteration") or 1)
    from ray.rllib.algorithms.dqn.dqn import DQN, calculate_rr_weights

    if config is None or not issubclass(config.algo_class or object, DQN):
        return {timer: steps for timer in SPLIT_TIMERS.values()}
    store, _ = calculate_rr_weights(config)
    learned = ((result.get("learners") or {}).get("__all_modules__") or {}).get("num_env_steps_trained")
    batch = config.total_train_batch_size
    return {SPLIT_TIMERS["time_sampling_s"]: store * steps,
            SPLIT_TIMERS["time_learning_s"]: round((as_number(learned) or 0) / batch) if batch else steps}


def split_time(state: TrialState, result: dict, config=None) -> None:
    """This iteration's seconds sampling and learning (time_sampling_s, time_learning_s) from RLlib's timers."""
    timers, seen = result.get("timers") or {}, state.timers
    pushes = timer_pushes(config, result)
    for key, timer in SPLIT_TIMERS.items():
        if pushes[timer] == 0:  # not run in this iteration (DQN before learning starts): its average is last one's
            result[key] = 0.0
            continue
        average = as_number(timers.get(timer))
        if average is None:
            continue
        result[key] = min(this_iteration(average, seen.get(timer), pushes[timer]),
                          as_number(result.get("time_this_iter_s")) or math.inf)  # an estimate, never over the whole
        seen[timer] = average


def no_runner_left(algorithm, result: dict) -> None:
    """Ends training when every env runner failed in this iteration. RLlib restarts failed env runners (we
    ask it to: a lost node must cost a few samples, not the job), and it does so for an env that raises too:
    such a run would "train" on no samples for ever, and a job chain requeue it to its cap."""
    healthy = (result.get("fault_tolerance") or {}).get("num_healthy_workers")
    if algorithm.config.num_env_runners and healthy == 0:
        failure = last_failure()
        if failure is None:
            raise RuntimeError(f"every env runner failed in iteration {result.get('training_iteration')}: the env "
                               "raised (its traceback is in the env runners' lines of the log) or their nodes were "
                               "lost")
        # The runner's traceback last: the console's line is the last exception line (rlhpc.outputs.report), the
        # env's own; error.txt keeps all of it.
        raise RuntimeError(f"every env runner failed in iteration {result.get('training_iteration')}; the last "
                           f"one on {failure['node']} with {failure['line']}:\n\n{failure['traceback']}")


def count_env_failures(episode, metrics_logger) -> bool:
    """An env copy that crashed or hung (rlhpc.envs.guard) ended its episode with a step whose info says so (each
    acting agent's info, in a multi-agent env): counted per iteration as env_runners/env_restarts and
    env_runners/env_timeouts. -> whether this episode ended so."""
    try:
        info = episode.get_infos(-1)
    except (IndexError, AttributeError, TypeError, KeyError):  # no step yet
        return False
    if not isinstance(info, dict):
        return False
    infos = [info] if not info or not all(isinstance(i, dict) for i in info.values()) else list(info.values())
    failed = False
    for key, metric in ((RESTART_INFO, ENV_RESTARTS), (TIMEOUT_INFO, ENV_TIMEOUTS)):
        if any(i.get(key) for i in infos):  # once per episode, however many agents were acting
            metrics_logger.log_value(metric, 1, reduce="sum")
            failed = True
    return failed


def no_samples(algorithm, result: dict) -> None:
    """Ends training when an iteration collected no env steps: RLlib then trains on nothing and reports an
    iteration of 0 steps, for ever (its sample timeout dropped every runner's fragment)."""
    runners = result.get("env_runners") or {}
    if isinstance(runners, dict) and not runners.get("num_env_steps_sampled"):
        raise RuntimeError(
            f"iteration {result.get('training_iteration')} collected no env steps within RLlib's sample timeout "
            f"({algorithm.config.sample_timeout_s:g} s, set from the env's step time; --set sample_timeout_s=S to "
            "raise it): the env runners failed or a fragment takes longer than that")


class ReturnOverLast100Episodes(RLlibCallback):
    def __init__(self):
        super().__init__()
        self.state = TrialState()
        quiet_rllib_noise()  # RLlib builds this in each env runner (and Tune's trial actor) before the env and module
        record_in_this_process()  # an env runner's fatal error reaches the run's error line (runner_errors)

    def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, prev_episode_chunks=(), **kwargs):
        if env_runner is not None and env_runner.config.in_evaluation:
            return  # evaluation episodes are not training progress (and would leak the raw list)
        # An episode that spans several sample() calls arrives in chunks; the earlier ones are
        # passed along (RLlib sums them the same way for its own metrics).
        ret = episode.get_return() + sum(chunk.get_return() for chunk in prev_episode_chunks or ())
        if metrics_logger is not None:
            if count_env_failures(episode, metrics_logger):
                return  # cut short by a crash or hang: its return is not the policy's
            metrics_logger.log_value(RETURNS_THIS_ITERATION, float(ret), reduce="item_series")
            for policy, share in policy_returns(episode, prev_episode_chunks or ()).items():
                metrics_logger.log_value((POLICY_RETURNS_THIS_ITERATION, policy), share, reduce="item_series")

    def on_train_result(self, *, algorithm, result, **kwargs):
        no_runner_left(algorithm, result)
        no_samples(algorithm, result)
        window = self.state.returns
        result.pop(SAVED_WINDOW, None)  # the copies saved last iteration, reduced into this result
        result.pop(SAVED_TIMERS, None)
        result.pop(SAVED_EVALUATION, None)
        split_time(self.state, result, algorithm.config)
        keep_best(algorithm, self.state, result)
        runners = result.get("env_runners")
        by_policy = self.state.policy_returns
        if isinstance(runners, dict):
            window.extend(as_list(runners.pop(RETURNS_THIS_ITERATION, None)))
            # NaN until the first episode ends, as RLlib does: the column is there from the first row
            # (progress.csv's header is fixed by it, and Tune warns about a missing stop metric).
            runners[RETURN_LAST_100] = sum(window) / len(window) if window else math.nan
            for metric in (ENV_RESTARTS, ENV_TIMEOUTS):  # columns from the first row: progress.csv's header is fixed
                runners[metric] = as_number(runners.get(metric)) or 0  # RLlib reduces a sum of nothing to NaN
            for policy, returns in (runners.pop(POLICY_RETURNS_THIS_ITERATION, None) or {}).items():
                by_policy.setdefault(policy, deque(maxlen=WINDOW)).extend(as_list(returns))
            if algorithm.config.is_multi_agent:
                runners[POLICY_RETURN_LAST_100] = {
                    policy: (sum(by_policy[policy]) / len(by_policy[policy]) if by_policy.get(policy) else math.nan)
                    for policy in sorted(algorithm.config.policies)}
        # An "item" stat holds the list as is until the next iteration's reduce; a checkpoint taken
        # after this iteration saves it with the rest of the MetricsLogger state.
        algorithm.metrics.log_value(SAVED_WINDOW, list(window), reduce="item")
        for policy, returns in by_policy.items():
            algorithm.metrics.log_value((SAVED_POLICY_WINDOWS, policy), list(returns), reduce="item")
        seen = self.state.timers  # as a list of numbers (NaN: not seen), as the window is saved
        algorithm.metrics.log_value(SAVED_TIMERS, [seen.get(t, math.nan) for t in SPLIT_TIMERS.values()],
                                    reduce="item")

    def on_checkpoint_loaded(self, *, algorithm, **kwargs):
        window = self.state.returns
        window.clear()
        # peek(default=None) raises on a key this checkpoint lacks (an older run's): defaults that are not None.
        window.extend(algorithm.metrics.peek(SAVED_WINDOW, default=[]) or [])
        by_policy = self.state.policy_returns
        by_policy.clear()
        for policy, returns in (algorithm.metrics.peek(SAVED_POLICY_WINDOWS, default={}) or {}).items():
            by_policy[policy] = deque(as_list(returns), maxlen=WINDOW)
        last_best = algorithm.metrics.peek(SAVED_EVALUATION, default=[]) or [math.nan, math.nan]
        self.state.evaluation.update(last=last_best[0], best=last_best[1])
        saved = algorithm.metrics.peek(SAVED_TIMERS, default=[]) or []
        saved = dict(zip(SPLIT_TIMERS.values(), saved, strict=False))  # a checkpoint from before: none saved
        self.state.timers.update({t: v for t, v in saved.items() if as_number(v) is not None})
