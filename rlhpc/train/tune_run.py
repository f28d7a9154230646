"""The Tune backend: searches, cluster runs and GPU runs, as Tune trials, with our progress line,
checkpoints on signals, resume, and the outcome in rlhpc.outputs.report's shape.

Its trials write their files with rlhpc.train.trial_files (Tune's own CSV/JSON loggers are turned off), stop by the
trainer's rlhpc.train.stop_signal.StopSignal and log to W&B/MLflow with rlhpc.train.tracking's callbacks, as the
in-process trial does.

What is searched and how (the searcher, the scheduler, the trials at once): rlhpc.train.tune_search.

Private APIs used here, and why: `LoggerCallback._restore_from_remote` fetches a restored trial's files from the
storage path into Tune's staging dir (a new, empty one in each job), as Tune's own loggers do; there is no public call
for it. `Tuner._local_tuner.get_run_config()`: Tune restores a run with the callbacks it pickled at its start, and
gives no public way to hand a restored run this process's callbacks (the StopSignal, this allocation's placement);
ours are swapped in there. `Tuner._local_tuner._tune_config.scheduler`: the restored scheduler, whose state
tune_search.SchedulerStateKept puts back.
`Trial.temporary_state.ray_actor`: the actor of a trial hung past SIGTERM's grace, killed rather than waited for
(StopOnSignal._end_hung_trials).
"""

import os
import signal

from ray import tune
from ray.tune.logger import LoggerCallback, TBXLoggerCallback

from rlhpc.algo.config import algorithm_class
from rlhpc.errors import UserError, warn
from rlhpc.outputs.report import (
    Outcome,
    ProgressLine,
    TrialOutcome,
    training_failed,
)
from rlhpc.run.algorithms import PLACEMENT_KEYS
from rlhpc.run.results import checkpoint_due, ended
from rlhpc.run.resume import stop_changed
from rlhpc.run.search import trial_count
from rlhpc.train import tracking
from rlhpc.train.stop_signal import StopSignal, grace_s
from rlhpc.train.trial_files import TrialFiles
from rlhpc.train.tune_search import (
    SchedulerStateKept,
    SearchedTrialName,
    print_packing,
    scheduler,
    search_algorithm,
    search_space,
)


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


class TrialFilesCallback(LoggerCallback):
    """Each trial's progress.csv, result.json, params.json and params.pkl, written by rlhpc.train.trial_files in
    Tune's staging dir for the trial (Tune copies it to the storage path, as it does its own loggers' files)."""

    FILES = ("progress.csv", "result.json", "params.json", "params.pkl")

    def __init__(self):
        self._files = {}  # trial -> TrialFiles

    def log_trial_start(self, trial):
        restarted = trial in self._files  # Tune restarted a failed trial: this process wrote its files
        if restarted:
            self._files.pop(trial).close()
        trial.init_local_path()
        # A restored trial's staging dir starts empty: its files come back from the storage path first. Not
        # those of a trial this process wrote: the copy there lags behind (synced with the checkpoints).
        if not restarted:
            for name in self.FILES:
                self._restore_from_remote(name, trial)
        checkpointed = trial.latest_checkpoint_result
        after = checkpointed.metrics.get("training_iteration", 0) if checkpointed else 0
        self._files[trial] = TrialFiles(trial.local_path, trial.config, after_iteration=after, params_pickle=True)

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._files:
            self.log_trial_start(trial)
        self._files[trial].write(result)

    def log_trial_end(self, trial, failed=False):
        files = self._files.pop(trial, None)
        if files:
            files.close()


class ElasticResume(tune.Callback):
    """On --resume, restored trials get this run's placement (env runners, learners, GPUs, custom
    resources) instead of the one saved with them: a requeued job may have another allocation, and
    Tune would otherwise wait for the old one (Ray #36761). What a trial trains stays as saved; how long it trains
    is the resume's when --stop-* changed it (Tune keeps each trial's stop criteria in its saved state).

    placement: {config key: value} of this run's config, only when resuming (None: nothing to change).
    stop: the stop criteria, only when a resume changed them."""

    def __init__(self, placement=None, stop=None):
        self.placement = placement
        self.stop = stop
        self._done = False

    def on_step_begin(self, iteration, trials, **info):
        if self._done or not (self.placement or self.stop):
            return
        self._done = True
        finished = [trial for trial in trials if trial.status == trial.TERMINATED]
        if self.stop and finished:
            warn(f"{len(finished)} trial(s) of this Tune run had finished: Tune does not train a finished trial "
                 "again, so the new --stop-* applies to the unfinished ones only")
        for trial in trials:
            if trial.status in (trial.PENDING, trial.PAUSED, trial.ERROR):
                if self.stop:
                    trial.stopping_criterion = dict(self.stop)
                if self.placement:
                    config = {**trial.config, **self.placement}
                    trial.set_config(config)
                    trial.update_resources(algorithm_class(trial.trainable_name).default_resource_request(config))


class StopOnSignal(tune.Callback):
    """The trainer's StopSignal for Tune: checkpoint every running trial at its next result, then stop Tune.

    Tune alone stops on SIGUSR1/SIGINT but keeps only the last periodic checkpoint, and dies on
    SIGTERM. Slurm sends SIGUSR1 before the wall-time limit (`#SBATCH --signal=B:USR1@N`): the next
    job resumes from here. On a plain scancel or pre-emption Slurm signals every process of the job
    at once, Ray's included, so the save is attempted but not assured there (slurm/README.md).

    A trial whose iteration has not ended RLHPC_STOP_GRACE_S after a SIGTERM (a hung simulator) would keep Tune
    waiting until Slurm's SIGKILL: the StopSignal's grace timer then signals the main thread, whose handler stops
    Tune as a second signal does (Tune's own handler, called where Tune runs: it saves the experiment's state, each
    trial keeps its last checkpoint) and kills the actors of the trials still in that iteration (_end_hung_trials);
    `train` says where each trial goes on from (grace_over_line). Measured: exit 4 s after the grace, 14 s without
    the kills.
    """

    def __init__(self, stop: StopSignal):
        self.stop = stop
        self._installed = False
        self._pending: set = set()
        self._tune_handler: object = None  # Tune's SIGUSR1 handler, as signal.getsignal gives it
        self._trials: list = []  # Tune's trials, as the last step began

    def __getstate__(self):
        # Pickled with Tune's experiment (unused: a resumed run gets this process's callbacks); Tune's
        # signal handler is this process's own.
        return {**self.__dict__, "_tune_handler": None, "_trials": []}

    def on_step_begin(self, iteration, trials, **info):
        self._trials = trials
        # Installed here, after Tune set its own SIGUSR1/SIGINT handlers, so ours win.
        if self._installed:
            return
        self._installed = True
        self._pending = set()
        self._tune_handler = signal.getsignal(signal.SIGUSR1)
        self.stop.catch_all(on_second=self._interrupt_tune)  # a second signal: stop now, as Tune would

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.stop.received and trial.trial_id not in self._pending:
            result["should_checkpoint"] = True  # Tune reads this after the callbacks ran
            self._pending.add(trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not self.stop.received:
            return
        running = {t.trial_id for t in trials if t.status == "RUNNING"}
        if running <= self._pending:
            self.stop.iteration_ended()  # every trial saved in time: no grace to end
            self._interrupt_tune()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_checkpoint(iteration, trials, trial, None)

    def on_experiment_end(self, trials, **info):
        self.stop.iteration_ended()  # Tune has ended: nothing left for the grace to interrupt

    def _interrupt_tune(self):
        if callable(self._tune_handler):
            self._tune_handler(signal.SIGUSR1, None)  # sets Tune's "interrupted" flag: state is saved
        if self.stop.grace_over:
            self._end_hung_trials()

    def _end_hung_trials(self):
        """The actors of the trials still in the iteration they were in at the signal: Tune would wait 10 s for each
        to stop before killing it (TuneController._cleanup_stopping_actors), where Slurm's KillWait leaves 15."""
        import ray

        for trial in self._trials:
            actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
            if trial.status == "RUNNING" and trial.trial_id not in self._pending and actor is not None:
                ray.kill(actor, no_restart=True)


class PeriodicCheckpoints(tune.Callback):
    """--checkpoint-freq for Tune's trials, decided as the in-process loop decides it (rlhpc.run.results.checkpoint_due)
    rather than by Tune's CheckpointConfig; a resume's --checkpoint-freq applies to restored trials too."""

    def __init__(self, every: int):
        self.every = every

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if checkpoint_due(result, self.every):
            result["should_checkpoint"] = True  # Tune reads this after the callbacks ran


OUR_CALLBACKS = (TuneProgressLine, StopOnSignal, PeriodicCheckpoints, TrialFilesCallback, TBXLoggerCallback,
                 ElasticResume, SchedulerStateKept)


def our_callbacks(stop: StopSignal, checkpoint_freq: int, scheduler, placement=None, stop_criteria=None) -> list:
    """What every Tune run of ours has besides tracking, always in this order (Tune restores the callbacks' states
    by their place). Tune's default loggers are off (train()): the files are TrialFilesCallback's, the TensorBoard
    events Tune's own logger's, as before. scheduler: the run's (SchedulerStateKept)."""
    return [TuneProgressLine(), StopOnSignal(stop), PeriodicCheckpoints(checkpoint_freq), TrialFilesCallback(),
            TBXLoggerCallback(), ElasticResume(placement, stop_criteria), SchedulerStateKept(scheduler)]


def make_tuner(spec, param_space, stop: StopSignal, placement=None, at_once: int = 1):
    """placement: this run's placement keys, given to restored trials (ElasticResume); only when resuming.
    at_once: how many trials the allocation holds at once (print_packing), which PBT's scheduling and a
    model-based --search use."""
    algo_cls = algorithm_class(spec.training.algo)
    if spec.output.resume_dir:
        tracking.prepare(spec)  # the tracking callbacks come back with the experiment, not their environment
        if any(change.flag in ("--wandb", "--mlflow") for change in spec.output.changes):
            warn(f"{spec.output.resume_dir} trains through Tune, which resumes with the tracking it started with: "
                 "--wandb/--mlflow given now are not used")
        # Stop criteria (unless --stop-* changed them: ElasticResume) and callbacks come back from the saved
        # experiment; the config is given
        # again because it holds objects Tune cannot always re-create on its own.
        try:
            tuner = tune.Tuner.restore(spec.output.resume_dir, trainable=algo_cls, resume_unfinished=True,
                                       resume_errored=True, param_space=param_space)
        except ValueError as e:  # e.g. a custom resource for env runners that the run did not have
            first = str(e).strip().splitlines()[0]
            raise UserError(f"cannot resume {spec.output.resume_dir} with this config: {first} (Tune needs the keys "
                            "the run started with: resume with the flags it was started with)") from None
        # Our callbacks as this process made them, the tracking ones as the run started with them.
        assert tuner._local_tuner is not None  # a Tuner made in this process (not through Ray Client)
        callbacks = tuner._local_tuner.get_run_config().callbacks
        assert callbacks is not None  # the run started with ours
        new_stop = dict(spec.stop.criteria) if stop_changed(spec.output.changes) else None
        restored_scheduler = tuner._local_tuner._tune_config.scheduler  # unpickled: its state from SchedulerStateKept
        callbacks[:] = [*our_callbacks(stop, spec.output.checkpoint_freq, restored_scheduler, placement, new_stop),
                        *(c for c in callbacks if not isinstance(c, OUR_CALLBACKS))]
        return tuner
    keys = set(param_space) if isinstance(param_space, dict) else set()  # a search's space, else the config
    all_at_once = at_once >= trial_count(spec.search.space, spec.search.num_samples, spec.search.searcher)
    decides = scheduler(spec, keys, all_at_once)
    run_config = tune.RunConfig(
        name=spec.output.name,
        storage_path=spec.output.storage_path,
        stop=dict(spec.stop.criteria),
        verbose=0,  # ProgressLine prints instead
        callbacks=[*our_callbacks(stop, spec.output.checkpoint_freq, decides), *tracking.callbacks(spec)],
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),  # periodic ones: PeriodicCheckpoints
        failure_config=tune.FailureConfig(max_failures=spec.placement.max_failures),
    )
    tune_config = tune.TuneConfig(num_samples=spec.search.num_samples, scheduler=decides,
                                  search_alg=search_algorithm(spec, at_once),
                                  trial_dirname_creator=SearchedTrialName(spec.search.space) if spec.search.searcher
                                  else None)
    return tune.Tuner(algo_cls, param_space=param_space, run_config=run_config, tune_config=tune_config)


def train(spec, config, stop: StopSignal) -> Outcome:
    """Runs (or restores) the Tune experiment until every trial stopped; Tune restarts crashed trials."""
    param_space = search_space(config, spec.search.space, spec.search.searcher) if spec.search.space else config
    placement = None
    if spec.output.resume_dir:
        ours = config.to_dict()
        placement = {key: ours[key] for key in PLACEMENT_KEYS if key in ours}
    # Tune's own CSV/JSON loggers off (read when fit() makes its default callbacks): TrialFilesCallback writes.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    at_once = print_packing(spec, config) if spec.search.space or spec.search.num_samples > 1 else 1
    grid = make_tuner(spec, param_space, stop, placement, at_once).fit()
    trials = [TrialOutcome(path=r.path, metrics=r.metrics or {}, checkpoint=r.checkpoint.path if r.checkpoint else None,
                           config=r.config or {},
                           error=training_failed(str(r.error), r.error, r.path) if r.error else None)
              for r in grid]
    if stop.grace_over:  # Tune was stopped mid-iteration, SIGTERM's grace after (StopOnSignal)
        warn(grace_over_line(grid, stop.received, dict(spec.stop.criteria)))
    return Outcome(grid.experiment_path, trials, stop.received)


def grace_over_line(grid, signal_name: str | None, stop: dict) -> str:
    """Where each trial that --resume trains again goes on from: its last checkpoint (the iteration it was in when
    Tune stopped is lost), or the start."""
    points = [f"trial {(r.metrics or {}).get('trial_id') or os.path.basename(r.path)} {resume_point(r)}" for r in grid
              if r.error or not ended(r.metrics or {}, stop)]
    return (f"an iteration did not end within {grace_s():g} s of {signal_name}: Tune stopped there; --resume goes on "
            "with " + (", ".join(points) or "nothing: every trial had finished"))


def resume_point(result) -> str:
    """'from iteration 3 (checkpoint_000002)', or 'from the start (no checkpoint)', for a Tune trial's Result."""
    if result.checkpoint is None:
        return "from the start (no checkpoint)"
    name = os.path.basename(result.checkpoint.path)
    iteration = next((metrics.get("training_iteration") for checkpoint, metrics in result.best_checkpoints or []
                      if checkpoint.path == result.checkpoint.path), None)
    return f"from iteration {iteration} ({name})" if iteration else f"from {name}"
