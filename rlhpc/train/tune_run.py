"""The Tune backend: searches, cluster runs and GPU runs, as Tune trials, with our progress line,
checkpoints on signals, resume, and the outcome in rlhpc.outputs.report's shape.
"""

import csv
import os
import signal

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from rlhpc.algo.config import algorithm_class
from rlhpc.errors import UserError, warn
from rlhpc.outputs.report import (
    STOP_SIGNALS,
    EarlyStop,
    Outcome,
    ProgressLine,
    TrialOutcome,
    announce_stop,
    training_failed,
)
from rlhpc.run import experiment
from rlhpc.run.algorithms import PLACEMENT_KEYS
from rlhpc.train import tracking


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
            header = experiment.progress_header(trial.local_path)
            if header:
                self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header, extrasaction="ignore")
        super().log_trial_result(iteration, trial, result)


class FirstParamsJsonLogger(JsonLoggerCallback):
    """result.json as Tune writes it, but params.json stays the config the trial started with: Tune
    rewrites it on every restore, and the run's record of how it started would be lost."""

    def update_config(self, trial, config):
        self._trial_configs[trial] = config
        # Tune writes a trial's files in a staging dir and copies them to the storage path: a restored
        # trial's staging dir starts empty, so fetch the first params.json back (as Tune does for progress.csv).
        for name in ("params.json", "params.pkl"):
            self._restore_from_remote(name, trial)
        if not os.path.exists(os.path.join(trial.local_path, "params.json")):
            super().update_config(trial, config)


class ElasticResume(tune.Callback):
    """On --resume, restored trials get this run's placement (env runners, learners, GPUs, custom
    resources) instead of the one saved with them: a requeued job may have another allocation, and
    Tune would otherwise wait for the old one (Ray #36761). What a trial trains stays as saved.

    Part of every Tune run's callbacks, since Tune restores a run with the callbacks it started with;
    `placement` is set by train() for the restore."""

    placement = None  # {config key: value} of this run's config, only when resuming

    def __init__(self):
        self._done = False

    def on_step_begin(self, iteration, trials, **info):
        if self._done or not ElasticResume.placement:
            return
        self._done = True
        for trial in trials:
            if trial.status in (trial.PENDING, trial.PAUSED, trial.ERROR):
                config = {**trial.config, **ElasticResume.placement}
                trial.set_config(config)
                trial.update_resources(algorithm_class(trial.trainable_name).default_resource_request(config))


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
        StopOnSignal.received = StopOnSignal.received or EarlyStop.received
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


def make_tuner(spec, param_space):
    algo_cls = algorithm_class(spec.algo)
    if spec.resume_dir:
        tracking.prepare(spec)  # the tracking callbacks come back with the experiment, not their environment
        if any(flag in ("--wandb", "--mlflow") for flag, *_ in spec.changes):
            warn(f"{spec.resume_dir} trains through Tune, which resumes with the tracking it started with: "
                 "--wandb/--mlflow given now are not used")
        # Stop criteria and callbacks come back from the saved experiment; the config is given
        # again because it holds objects Tune cannot always re-create on its own.
        try:
            return tune.Tuner.restore(spec.resume_dir, trainable=algo_cls, resume_unfinished=True,
                                      resume_errored=True, param_space=param_space)
        except ValueError as e:  # e.g. a custom resource for env runners that the run did not have
            first = str(e).strip().splitlines()[0]
            raise UserError(f"cannot resume {spec.resume_dir} with this config: {first} (Tune needs the keys "
                            "the run started with: resume with the flags it was started with)") from None
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=spec.storage_path,
        stop=dict(spec.stop),
        verbose=0,  # ProgressLine prints instead
        callbacks=[TuneProgressLine(), StopOnSignal(), ResumableCSVLogger(), FirstParamsJsonLogger(),
                   ElasticResume(), *tracking.callbacks(spec)],
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=spec.checkpoint_freq, checkpoint_at_end=True),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    return tune.Tuner(algo_cls, param_space=param_space, run_config=run_config,
                      tune_config=tune.TuneConfig(num_samples=spec.num_samples))


def train(spec, config) -> Outcome:
    """Runs (or restores) the Tune experiment until every trial stopped; Tune restarts crashed trials."""
    param_space = search_space(config, spec.search) if spec.search else config
    if spec.resume_dir:
        placement = config.to_dict()
        ElasticResume.placement = {key: placement[key] for key in PLACEMENT_KEYS if key in placement}
    grid = make_tuner(spec, param_space).fit()
    trials = [TrialOutcome(path=r.path, metrics=r.metrics or {}, checkpoint=r.checkpoint.path if r.checkpoint else None,
                           config=r.config or {},
                           error=training_failed(str(r.error), r.error, r.path) if r.error else None)
              for r in grid]
    return Outcome(grid.experiment_path, trials, StopOnSignal.received)


def search_space(config, specs) -> dict:
    """The config as Tune's param_space dict, with search spaces where the user asked for them (every
    candidate value was checked against the config by rlhpc.algo.config.build_config)."""
    from ray import tune

    space = config.to_dict()
    for path, kind, values in specs:
        root = path[0]
        key = root if root in space else f"_{root}"  # model_config is stored as _model_config
        node = space
        for part in [key, *path[1:-1]]:
            node = node.setdefault(part, {})
        leaf = path[-1] if len(path) > 1 else None
        sampler = {"grid": tune.grid_search, "uniform": lambda v: tune.uniform(*v),
                   "loguniform": lambda v: tune.loguniform(*v)}[kind](list(values))
        if leaf is None:
            space[key] = sampler
        else:
            node[leaf] = sampler
    return space
