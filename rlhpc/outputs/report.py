"""What a run prints: its first lines, one line per iteration, and how it ended (summary, best, errors).

Both backends (rlhpc.train.inprocess, rlhpc.train.tune_run) hand back an Outcome; `finish` prints it the same way
for both and returns the exit code.
"""

import dataclasses
import itertools
import json
import os
import re
import sys
import time

from rlhpc.run import job_status, tracking_flags
from rlhpc.run.defaults import env_entry
from rlhpc.run.results import (
    EVAL_RETURN_METRIC,
    as_number,
    ended,
    env_steps,
    episode_return,
    reached,
    stop_reached,
    target_reward,
)
from rlhpc.run.search import POPULATION, trial_count


@dataclasses.dataclass
class TrialOutcome:
    path: str  # the trial dir
    metrics: dict  # its last result ({} if none)
    checkpoint: str | None  # its last checkpoint dir
    config: dict = dataclasses.field(default_factory=dict)  # the config it trained with (search: its values)
    error: str | None = None  # one line, for "error: ..."


@dataclasses.dataclass
class Outcome:
    experiment_path: str
    trials: list
    stopped_by: str | None = None  # the signal that stopped the run with a checkpoint
    stop: dict | None = None  # the stop criteria it ran under, when a resume kept its first ones


def family_settings(spec) -> str:
    """Observation normalization, the lr's schedule and reward scaling (the last two when on), each with why; a reason
    settings side by side share (auto: on for continuous actions) said once, after the last of them."""
    settings = [(f"observations normalized: {'yes' if spec.env.normalize_observations else 'no'}",
                 spec.env.normalize_reason)]
    if spec.training.anneal_lr_until:
        settings.append((f"lr {spec.training.lr_schedule}", spec.training.anneal_lr_reason))
    if spec.training.scale_rewards:
        settings.append(("rewards scaled: yes", spec.training.scale_rewards_reason))
    return "; ".join(", ".join(text for text, _ in group) + f" ({why})"
                     for why, group in itertools.groupby(settings, key=lambda setting: setting[1]))


def start_lines(spec, where: str, placement: dict) -> None:
    print(f"{spec.training.algo} on {spec.env.source.name} with {where}: {placement['num_env_runners']} env runner(s) "
          f"x {placement['num_envs_per_env_runner']} envs, learner: {placement['learner_placement']}", flush=True)
    if spec.env.agent_policy:
        print(f"policies: {spec.env.policies_reason}: " +
              ", ".join(f"{agent} -> {policy}" for agent, policy in spec.env.agent_policy.items()), flush=True)
    if not spec.training.legacy_stack:
        from rlhpc.envs.spaces import observation_lines

        for line in observation_lines(spec.env.probe):
            print(line, flush=True)
    envs = max(1, placement["num_env_runners"]) * placement["num_envs_per_env_runner"]
    batch = (f"train batch {placement['train_batch_size_per_learner']:,} = {envs} envs x "
             f"{placement['rollout_fragment_length']} steps" if spec.placement.train_batch_size else
             f"{placement['rollout_fragment_length']} steps per env and sample")
    print(f"envs step {placement['vectorize']}; {batch}", flush=True)
    own = env_entry(spec.training.algo, spec.env.source.label)
    print(f"defaults for {spec.env.family} envs ({spec.env.family_reason}, rlhpc/run/defaults.py)"
          + (f" with {spec.env.source.label}'s own {', '.join(own)}" if own else "") + "; "
          + family_settings(spec), flush=True)
    if not spec.training.legacy_stack and not spec.env.agent_policy:  # rlhpc.envs.guard
        limit = (f"a step over {spec.env.step_timeout_s:g} s is abandoned ({spec.env.timeout_reason})"
                 if spec.env.step_timeout_s else "no time limit (--env-timeout 0)")
        print(f"env copies that crash are rebuilt; {limit}; RLlib's sample timeout "
              f"{placement['sample_timeout_s']:g} s", flush=True)
    print("stop when: " + ", ".join(f"{k} >= {v:g}" for k, v in spec.stop.criteria.items()), flush=True)
    if spec.search.scheduler:
        print(scheduler_line(spec.search), flush=True)
    if spec.search.searcher:
        print(searcher_line(spec.search), flush=True)
    for line in tracking_flags.describe(spec):
        print(line, flush=True)


def scheduler_line(search) -> str:
    """What --scheduler will do, in one line."""
    if search.scheduler in POPULATION:
        keys = ", ".join(".".join(path) for path, _, _ in search.space)
        by = ranking(search)
        how = "perturbed" if search.scheduler == "pbt" else "new values picked by a Gaussian process"
        return (f"{search.scheduler}: every {search.perturbation_interval} iterations the worst quarter of the trials "
                f"take the weights of one of the best quarter (by {by}) and its {keys}, {how}")
    if search.scheduler == "hyperband":
        return (f"hyperband: brackets of trials; at each rung only the best 1/{search.reduction_factor} of a bracket "
                "go on (by their 100-episode return), the others wait paused until their bracket gets there")
    return (f"{search.scheduler}: from iteration {search.grace_period} on, only the best 1/{search.reduction_factor} "
            "of the trials at each rung go on (by their 100-episode return)")


def ranking(search) -> str:
    """What --metric ranks the trials by, in words."""
    return "their 100-episode return" if search.metric == "return" else f"{search.metric} ({search.mode})"


def searcher_line(search) -> str:
    """What --search will do, in one line."""
    name = {"optuna": "Optuna's TPE", "bayesopt": "a Gaussian process (BayesOpt)"}[search.searcher]
    by = ranking(search)
    return (f"{search.searcher}: {name} picks each of the {search.num_samples} trials' values from the results of the "
            f"trials before (by {by})")


def resume_line(spec, iteration: int) -> None:
    """Which run a --resume continues, from where, and what it changed (rlhpc.run.resume)."""
    changed = "; ".join(f"{change.flag} {change.before} -> {change.after}" for change in spec.output.changes)
    where = f"after iteration {iteration}" if iteration else \
        "from the start: it has no checkpoint (the rows it wrote are replaced)"
    print(f"resuming {spec.output.resume_dir} {where}" + (f", changed: {changed}" if changed else ""), flush=True)


class ProgressLine:
    """One line per iteration instead of Tune's tables: steps, return, speed, time."""

    def __init__(self):
        self._last_steps = {}  # trial id -> env steps at its previous result, for steps/s

    def line(self, result: dict, trial_id=None) -> str:
        steps = env_steps(result)
        last = self._last_steps.get(trial_id)
        iter_time = result.get("time_this_iter_s") or 0
        if last is not None and iter_time and steps >= last:  # (fewer: a PBT exploit restored another trial)
            rate = (steps - last) / iter_time
        else:
            rate = steps / max(result.get("time_total_s", 1), 1e-9)
        self._last_steps[trial_id] = steps
        ret = episode_return(result)
        line = (f"iter {result.get('training_iteration', 0):4d}  steps {steps:>10,}  "
                f"return {'       -' if ret is None else f'{ret:8.2f}'}  "
                f"{rate:8,.0f} steps/s  {result.get('time_total_s', 0):7.1f} s")
        evaluated = as_number(result.get(EVAL_RETURN_METRIC))
        if evaluated is not None:  # --eval-interval: this iteration's greedy evaluation (rlhpc.algo.metrics)
            line += f"  eval {evaluated:8.2f}"
        shares = (result.get("env_runners") or {}).get("policy_return_mean_100") or {}
        if shares:  # multi-agent: the return above is the sum over agents; each policy's part of it
            line += "  [" + ", ".join(f"{policy} {'-' if as_number(value) is None else f'{value:.2f}'}"
                                      for policy, value in shares.items()) + "]"
        sampling, learning = result.get("time_sampling_s"), result.get("time_learning_s")
        if sampling is not None and learning is not None:  # rlhpc.algo.metrics: where this iteration's time went
            line += f"  (sampling {sampling:.1f} s, learning {learning:.1f} s)"
        runners = result.get("env_runners") or {}
        rebuilt = [f"{runners[key]:g} env {word}" for key, word in (("env_restarts", "restarts"),
                                                                       ("env_timeouts", "timeouts"))
                   if as_number(runners.get(key))]
        if rebuilt:  # env copies that crashed or hung and were rebuilt (rlhpc.envs.guard)
            line += "  [" + ", ".join(rebuilt) + "]"
        return line


def announce_stop(signal_name: str) -> None:
    print(f"{signal_name} received: saving a checkpoint at the end of this iteration, then stopping",
          file=sys.stderr, flush=True)


def failure_line(traceback_text: str, error: BaseException) -> str:
    """The line of a traceback that says what went wrong. Not always the last: RLlib re-raises an env's
    error as a bare `RuntimeError from e`, so prefer the last "Type: message" line over a bare type."""
    exception_line = re.compile(r"[A-Za-z_][\w.]*(\([\w.]+\))?(: .*)?")
    lines = [line for line in traceback_text.splitlines() if exception_line.fullmatch(line)]
    with_message = [line for line in lines if ": " in line]
    return (with_message or lines or [type(error).__name__])[-1]


def training_failed(traceback_text: str, error: BaseException, trial_dir: str) -> str:
    return (f"training failed: {failure_line(traceback_text, error)} "
            f"(full traceback: {os.path.join(trial_dir, 'error.txt')})")


def print_trials(trials: list, spec, stop: dict, started: float) -> int:
    """The summary, results and checkpoint lines of each trial; 1 when --as-test and a trial missed the reward."""
    target = target_reward(stop)
    exit_code = 0
    for trial in trials:
        metrics = trial.metrics or {}
        ret = episode_return(metrics)
        hit = reached(metrics, stop)
        prefix = f"[{os.path.basename(trial.path)[:40]}] " if len(trials) > 1 else ""
        print(f"{prefix}summary: reached={'yes' if hit else 'no'}"
              + (f" (stop reward {target:g})" if target is not None else "")
              + f"  return={'-' if ret is None else f'{ret:.2f}'}"
              + f"  iterations={metrics.get('training_iteration', 0)}  env_steps={env_steps(metrics):,}"
              + f"  train_time={metrics.get('time_total_s', 0):.1f}s  wall_time={time.time() - started:.1f}s",
              flush=True)
        if os.path.exists(os.path.join(trial.path, "progress.csv")):
            print(f"results:    {os.path.join(trial.path, 'progress.csv')}")
        if trial.checkpoint:
            print(f"checkpoint: {trial.checkpoint}")
        if spec.stop.as_test and not hit:
            exit_code = 1
    return exit_code


def print_best(trials: list, spec, experiment_path: str | None = None) -> None:
    """The best trial's values and score; with experiment_path, its config as an experiment file there too."""
    from rlhpc.run.search import METRICS, best_trial, searched_values

    value, best = best_trial(trials, spec.search.metric, spec.search.mode, spec.stop.target_reward)
    what = METRICS.get(spec.search.metric, (spec.search.metric, None))[0]
    if best is None:
        print(f"best: none of {len(trials)} trials has a value for {what}")
        return
    winner = searched_values(best.config, spec.search.space)
    print(f"best: {json.dumps(winner)}  {what} = {value:g}  ({os.path.basename(best.path)})", flush=True)
    if experiment_path:
        path = save_winner(spec, winner, f"{what} = {value:g}", experiment_path)
        print(f"best trial's config: {path} (train it again, or longer: --config-file {path})", flush=True)


def print_importance(trials: list, spec) -> None:
    """--search optuna: how much of the score each searched key explains (rlhpc.run.search.importance), a table."""
    from rlhpc.run.search import importance

    shares = importance(trials, spec.search.space, spec.search.metric, spec.search.mode, spec.stop.target_reward)
    if not shares:
        return
    print(f"parameter importance (Optuna's fANOVA over {len(trials)} trials; the shares sum to 1):", flush=True)
    width = max(map(len, shares))
    for key, share in shares.items():
        print(f"  {key:<{width}}  {share:.2f}", flush=True)


def save_winner(spec, winner: dict, score: str, experiment_path: str) -> str:
    """The winner's config as <experiment>/best_trial.yaml, from the flags the search was started with
    (rlhpc.run.search.winner_settings); -> its path."""
    from rlhpc.run import experiment
    from rlhpc.run.cli import build_parser
    from rlhpc.run.search import winner_file, winner_settings

    record = experiment.read_record(spec.output.resume_dir) if spec.output.resume_dir else None
    flags = record.flags if record and record.flags is not None else spec.flags  # a resume's are only its own

    def make_parser():
        return build_parser("", name_env=spec.env.source.name)

    settings = winner_settings(flags, make_parser, winner, name_env=spec.env.source.name,
                               num_gpus=spec.placement.num_gpus)
    why = f"the best trial of {experiment_path}: {json.dumps(winner)}, {score}"
    if spec.search.scheduler in POPULATION:
        why += f" (its last config: {spec.search.scheduler} changed it along the way, see rlhpc_scheduler.json)"
    return winner_file(experiment_path, settings, why)


def print_seeds(outcome: Outcome, spec) -> None:
    """--seeds: no "best" seed; the spread of the final returns, and where the figure with the band comes from."""
    from rlhpc.outputs.compare import spread

    finals = [r for r in (episode_return(t.metrics or {}) for t in outcome.trials) if r is not None]
    text = f"seeds: {len(outcome.trials)} trials"
    if len(finals) >= 2:  # a CI from enough seeds, else their range (rlhpc.outputs.compare.CI_MIN_SEEDS)
        low, high, name = spread(finals)
        text += f", final return {sum(finals) / len(finals):.2f} [{low:.2f}, {high:.2f}] ({name})"
    print(f"{text}; their mean and band: python -m rlhpc.compare {outcome.experiment_path}", flush=True)


def training_left(outcome: Outcome, spec) -> bool:
    """Whether the run has training left: a trial that has not ended (rlhpc.run.results.ended; a failed one has
    ended), or one the search has not made yet (Tune makes a grid's trials as it starts them)."""
    stop = outcome.stop or dict(spec.stop.criteria)
    expected = trial_count(spec.search.space, spec.search.num_samples, spec.search.searcher)
    return len(outcome.trials) < expected or any(not trial.error and not ended(trial.metrics or {}, stop)
                                                 for trial in outcome.trials)


def interrupted(outcome: Outcome, spec) -> bool:
    """Whether a signal stopped the run with training left (a signal after every trial ended stopped nothing)."""
    return bool(outcome.stopped_by) and training_left(outcome, spec)


def ending(outcome: Outcome, spec) -> str:
    """How the run ended, for the job that runs it (rlhpc.slurm.job requeues STOPPED ones): FAILED, DONE (every
    trial met a stop criterion or was stopped early by the scheduler), STOPPED (before that, by a signal:
    resumable); see rlhpc.run.job_status."""
    if any(trial.error for trial in outcome.trials):
        return job_status.FAILED
    # Left to train: stopped by a signal (ours, or Tune's own before ours was installed), resumable.
    return job_status.STOPPED if training_left(outcome, spec) else job_status.DONE


def print_stopped_early(outcome: Outcome, spec) -> None:
    """Which trials the scheduler stopped (ended, neither a stop criterion met nor failed), in one line and in
    <experiment>/rlhpc_scheduler.json."""
    from rlhpc.run import experiment

    if interrupted(outcome, spec):
        return  # a trial is still to train: the resumed run decides
    stop = outcome.stop or dict(spec.stop.criteria)
    stopped = [{"trial": os.path.basename(trial.path), "iteration": (trial.metrics or {}).get("training_iteration"),
                "return": episode_return(trial.metrics or {})}
               for trial in outcome.trials if not trial.error and not stop_reached(trial.metrics or {}, stop)]
    listing = ", ".join(f"{s['trial'][:40]} at iteration {s['iteration']}" for s in stopped)
    print(f"{spec.search.scheduler} stopped {len(stopped)} of {len(outcome.trials)} trials early"
          + (f": {listing}" if stopped else ""), flush=True)
    experiment.write_json(os.path.join(outcome.experiment_path, "rlhpc_scheduler.json"),
                          {"scheduler": spec.search.scheduler, "grace_period": spec.search.grace_period,
                           "reduction_factor": spec.search.reduction_factor, "stopped_early": stopped})


def print_exploits(outcome: Outcome, spec) -> None:
    """--scheduler pbt/pb2: the exploits rlhpc.train.tune_search.RecordedExploits kept in
    <experiment>/rlhpc_scheduler.json, a line each (the file is written with none when there was none)."""
    from rlhpc.run import experiment
    from rlhpc.run.search import pbt_record

    name = spec.search.scheduler
    path, record = pbt_record(outcome.experiment_path, spec.search.perturbation_interval, spec.search.metric, name)
    exploits = record["exploits"]
    if not exploits:
        experiment.write_json(path, record)
    print(f"{name}: {len(exploits)} exploit{'' if len(exploits) == 1 else 's'} ({path})", flush=True)
    for e in exploits:
        changed = ", ".join(f"{key} {e['before'].get(key)} -> {value}" for key, value in e["after"].items())
        print(f"  {e['trial'][:40]} at iteration {e['iteration']} took the weights of {e['from'][:40]} "
              f"(iteration {e['from_iteration']}); {changed}", flush=True)


def finish(outcome: Outcome, spec, started: float) -> int:
    """Prints how the run ended and where its files are; returns the exit code."""
    exit_code = print_trials(outcome.trials, spec, outcome.stop or dict(spec.stop.criteria), started)
    if spec.search.space and all(path == ("seed",) for path, _, _ in spec.search.space):
        print_seeds(outcome, spec)
    elif spec.search.space:
        print_best(outcome.trials, spec, outcome.experiment_path)
        if spec.search.searcher == "optuna":
            print_importance(outcome.trials, spec)
    if spec.search.scheduler in POPULATION:
        print_exploits(outcome, spec)
    elif spec.search.scheduler:
        print_stopped_early(outcome, spec)
    if interrupted(outcome, spec):
        print(f"stopped by {outcome.stopped_by}; state and checkpoint saved. Continue with: "
              f"--resume {outcome.experiment_path}", flush=True)
    elif outcome.stopped_by:
        print(f"{outcome.stopped_by} came after every trial had ended: nothing left to resume", flush=True)
    print(f"tensorboard --logdir {outcome.experiment_path}")
    errors = [trial.error for trial in outcome.trials if trial.error]
    for error in errors:
        print(f"error: {error}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    return 1 if errors else exit_code
