"""The Tune run: progress a person can read, checkpoints on signals, resume, and a summary."""

import csv
import json
import math
import numbers
import os
import re
import signal
import sys
import time

from ray import tune
from ray.tune.logger import CSVLoggerCallback

from rlhpc.config import LEGACY_RETURN_METRIC, RETURN_METRIC
from rlhpc.errors import UserError

STOP_SIGNALS = ("SIGUSR1", "SIGTERM", "SIGINT")  # Slurm's --signal, scancel/preemption, Ctrl+C


def as_number(value):
    """The value if it is a real number (not a bool, not NaN), else None: what can be ranked or plotted."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    return value if is_number else None


def episode_return(result: dict):
    runners = result.get("env_runners", {})
    value = next((runners[k] for k in ("episode_return_mean_100", "episode_reward_mean", "episode_return_mean")
                  if runners.get(k) is not None), None)
    return as_number(value)


def env_steps(result: dict) -> int:
    value = result.get("num_env_steps_sampled_lifetime")
    if value is None:  # legacy API stack
        value = result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", result.get("timesteps_total", 0))
    return int(value or 0)


class ProgressLine:
    """One line per iteration instead of Tune's tables: steps, return, speed, time."""

    def __init__(self):
        self._last_steps = {}  # trial id -> env steps at its previous result, for steps/s

    def line(self, result: dict, trial_id=None) -> str:
        steps = env_steps(result)
        last = self._last_steps.get(trial_id)
        iter_time = result.get("time_this_iter_s") or 0
        if last is not None and iter_time:
            rate = (steps - last) / iter_time
        else:
            rate = steps / max(result.get("time_total_s", 1), 1e-9)
        self._last_steps[trial_id] = steps
        ret = episode_return(result)
        return (f"iter {result.get('training_iteration', 0):4d}  steps {steps:>10,}  "
                f"return {'       -' if ret is None else f'{ret:8.2f}'}  "
                f"{rate:8,.0f} steps/s  {result.get('time_total_s', 0):7.1f} s")


class TuneProgressLine(tune.Callback):
    """ProgressLine for Tune's trials (trial id and counts when there are several)."""

    def __init__(self):
        self._progress = ProgressLine()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        line = self._progress.line(result, trial.trial_id)
        if len(trials) > 1:
            running = sum(t.status == "RUNNING" for t in trials)
            finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            line = f"[{trial.trial_id}] {line}  ({running} running, {finished}/{len(trials)} done)"
        print(line, flush=True)


class ResumableCSVLogger(CSVLoggerCallback):
    """progress.csv that stays aligned across --resume.

    Tune appends to an existing progress.csv under its old header but with the columns of the
    resumed process's first result, in whatever order they come: after a resume the return
    column then holds another metric. Here the existing header decides the columns.
    """

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_files:
            self._setup_trial(trial)
        if self._trial_csv[trial] is None and self._trial_continue[trial]:
            with open(os.path.join(trial.local_path, "progress.csv"), newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header, extrasaction="ignore")
        super().log_trial_result(iteration, trial, result)


def announce_stop(signal_name: str) -> None:
    print(f"{signal_name} received: saving a checkpoint at the end of this iteration, then stopping",
          file=sys.stderr, flush=True)


def print_ending(stopped_by, experiment_path: str) -> None:
    """How to continue after a signal, and where TensorBoard should look."""
    if stopped_by:
        print(f"stopped by {stopped_by}; state and checkpoint saved. Continue with: --resume {experiment_path}",
              flush=True)
    print(f"tensorboard --logdir {experiment_path}")


class StopOnSignal(tune.Callback):
    """SIGUSR1/SIGTERM/SIGINT: checkpoint every running trial at its next result, then stop Tune.

    Tune alone stops on SIGUSR1/SIGINT but keeps only the last periodic checkpoint, and dies on
    SIGTERM. Slurm sends SIGUSR1 before the wall-time limit (`#SBATCH --signal=B:USR1@N`): the next
    job resumes from here. On a plain scancel or pre-emption Slurm signals every process of the job
    at once, Ray's included, so the save is attempted but not assured there (slurm/README.md).
    """

    received = None  # the signal name, shared with the summary

    def __init__(self):
        self._installed = False

    def on_step_begin(self, iteration, trials, **info):
        # Installed here, after Tune set its own SIGUSR1/SIGINT handlers, so ours win.
        if self._installed:
            return
        self._installed = True
        self._pending = set()
        self._tune_handler = signal.getsignal(signal.SIGUSR1)
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), self._on_signal)

    def _on_signal(self, signum, frame):
        if StopOnSignal.received:  # a second signal: stop now, as Tune would
            return self._interrupt_tune()
        StopOnSignal.received = signal.Signals(signum).name
        announce_stop(StopOnSignal.received)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if StopOnSignal.received and trial.trial_id not in self._pending:
            result["should_checkpoint"] = True  # Tune reads this after the callbacks ran
            self._pending.add(trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not StopOnSignal.received:
            return
        running = {t.trial_id for t in trials if t.status == "RUNNING"}
        if running <= self._pending:
            self._interrupt_tune()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_checkpoint(iteration, trials, trial, None)

    def _interrupt_tune(self):
        if callable(self._tune_handler):
            self._tune_handler(signal.SIGUSR1, None)  # sets Tune's "interrupted" flag: state is saved


def experiment_dir(args) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(args.storage_path)), args.name)


def check_writable(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, ".rlhpc-write-test"), "w"):
            pass
        os.remove(os.path.join(path, ".rlhpc-write-test"))
    except OSError as e:
        raise UserError(f"cannot write results to {path}: {e.strerror or e}") from None


def resume_dir(args) -> str:
    """The experiment dir --resume names (default: this run's); an error when nothing is saved there."""
    from rlhpc.inprocess import has_state

    path = args.resume if isinstance(args.resume, str) else experiment_dir(args)
    path = os.path.abspath(os.path.expanduser(path))
    if not (has_state(path) or tune.Tuner.can_restore(path)):
        raise UserError(f"nothing to resume at {path}: no experiment state there")
    return path


def make_tuner(args, algo_cls, config, stop: dict, num_samples: int = 1):
    storage = os.path.abspath(os.path.expanduser(args.storage_path))
    check_writable(storage)
    if args.resume:
        path = resume_dir(args)
        # Stop criteria and callbacks come back from the saved experiment; the config is given
        # again because it holds objects Tune cannot always re-create on its own.
        return tune.Tuner.restore(path, trainable=algo_cls, resume_unfinished=True, resume_errored=True,
                                  param_space=config)
    max_failures = args.max_failures if args.max_failures is not None else (3 if args.address else 0)
    run_config = tune.RunConfig(
        name=args.name,
        storage_path=storage,
        stop=stop,
        verbose=0,  # ProgressLine prints instead
        callbacks=[TuneProgressLine(), StopOnSignal(), ResumableCSVLogger()],
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=args.checkpoint_freq, checkpoint_at_end=True),
        failure_config=tune.FailureConfig(max_failures=max_failures),
    )
    return tune.Tuner(algo_cls, param_space=config, run_config=run_config,
                      tune_config=tune.TuneConfig(num_samples=num_samples))


def print_summary(trials, stop: dict, args, started: float) -> int:
    """The summary, results and checkpoint lines for [(last result, trial dir, checkpoint dir or None)];
    returns 1 when --as-test and a trial missed the stop reward."""
    target = stop.get(RETURN_METRIC, stop.get(LEGACY_RETURN_METRIC))
    exit_code = 0
    for metrics, path, checkpoint in trials:
        metrics = metrics or {}
        ret = episode_return(metrics)
        reached = target is not None and ret is not None and ret >= target
        prefix = f"[{os.path.basename(path)[:40]}] " if len(trials) > 1 else ""
        print(f"{prefix}summary: reached={'yes' if reached else 'no'}"
              + (f" (stop reward {target:g})" if target is not None else "")
              + f"  return={'-' if ret is None else f'{ret:.2f}'}"
              + f"  iterations={metrics.get('training_iteration', 0)}  env_steps={env_steps(metrics):,}"
              + f"  train_time={metrics.get('time_total_s', 0):.1f}s  wall_time={time.time() - started:.1f}s",
              flush=True)
        if os.path.exists(os.path.join(path, "progress.csv")):
            print(f"results:    {os.path.join(path, 'progress.csv')}")
        if checkpoint:
            print(f"checkpoint: {checkpoint}")
        if args.as_test and not reached:
            exit_code = 1
    return exit_code


def summarize(grid, stop: dict, args, started: float, search=()) -> int:
    """Prints what happened in Tune's run and where it is; returns the exit code."""
    target = stop.get(RETURN_METRIC, stop.get(LEGACY_RETURN_METRIC))
    errors = [r for r in grid if r.error]
    exit_code = print_summary([(r.metrics, r.path, r.checkpoint.path if r.checkpoint else None) for r in grid],
                              stop, args, started)
    if search:
        from rlhpc.search import METRICS, best_trial, searched_values

        value, best = best_trial(grid, search, args.metric, args.mode, target)
        what = METRICS.get(args.metric, (args.metric, None))[0]
        if best is None:
            print(f"best: none of {len(grid)} trials has a value for {what}")
        else:
            print(f"best: {json.dumps(searched_values(best.config, search))}  {what} = {value:g}  "
                  f"({os.path.basename(best.path)})", flush=True)
    print_ending(StopOnSignal.received, grid.experiment_path)
    if errors:
        for result in errors:
            print(f"error: training failed: {failure_line(str(result.error), result.error)} "
                  f"(full traceback: {os.path.join(result.path, 'error.txt')})", file=sys.stderr, flush=True)
        return 1
    return exit_code


def failure_line(traceback_text: str, error: BaseException) -> str:
    """The line of a traceback that says what went wrong. Not always the last: RLlib re-raises an env's
    error as a bare `RuntimeError from e`, so prefer the last "Type: message" line over a bare type."""
    exception_line = re.compile(r"[A-Za-z_][\w.]*(\([\w.]+\))?(: .*)?")
    lines = [line for line in traceback_text.splitlines() if exception_line.fullmatch(line)]
    with_message = [line for line in lines if ": " in line]
    return (with_message or lines or [type(error).__name__])[-1]
