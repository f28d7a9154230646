"""The Tune backend: searches, cluster runs and GPU runs, as Tune trials, with our progress line,
checkpoints on signals, resume, and the outcome in rlhpc.outputs.report's shape.

Its trials write their files with rlhpc.train.trial_files (Tune's own CSV/JSON loggers are turned off), stop by the
trainer's rlhpc.train.stop_signal.StopSignal and log to W&B/MLflow with rlhpc.train.tracking's callbacks, as the
in-process trial does.

--scheduler pbt is Tune's PopulationBasedTraining (RecordedPBT; pb2, Tune's PB2, alike): a trial that exploits another
is paused, given the other's config (its searched keys perturbed) and restarted from the other's checkpoint, which PBT
itself has the better trials save at each perturbation (Tune's _schedule_trial_save), whatever --checkpoint-freq says.
RLlib's Algorithm has no reset_config, so each exploit starts a new trial actor; its restore
(Algorithm.restore_from_path, the new API stack's) loads the learner's weights and optimizer and syncs them to the env
runners. The optimizer's state carries the other trial's learning rate: the new config's lr is set after the first
update (RLlib's Learner sets the lr from the config's schedule after each update).

Private APIs used here, and why: `LoggerCallback._restore_from_remote` fetches a restored trial's files from the
storage path into Tune's staging dir (a new, empty one in each job), as Tune's own loggers do; there is no public call
for it. `Tuner._local_tuner.get_run_config()`: Tune restores a run with the callbacks it pickled at its start, and
gives no public way to hand a restored run this process's callbacks (the StopSignal, this allocation's placement);
ours are swapped in there. `PopulationBasedTraining._exploit` and `._trial_state`: the one place PBT decides an
exploit (Tune calls no callback for it), and each trial's last score there; `._get_new_config`: where PBT draws a new
config, given a generator of its own (RecordedPBT). `Tuner._local_tuner._tune_config.scheduler`, ASHA's
`_brackets`/`_trial_info`/`_num_stopped` and PBT's `_trial_state`: Tune does not save a scheduler's state with the
experiment; SchedulerStateKept keeps it and puts it back into the restored scheduler.
`Trial.temporary_state.ray_actor`: the actor of a trial hung past SIGTERM's grace, killed rather than waited for
(StopOnSignal._end_hung_trials).
"""

import os
import random
import signal
import warnings

from ray import tune
from ray.tune.logger import LoggerCallback, TBXLoggerCallback
from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from rlhpc.algo.config import algorithm_class
from rlhpc.errors import UserError, warn
from rlhpc.outputs.report import (
    Outcome,
    ProgressLine,
    TrialOutcome,
    training_failed,
)
from rlhpc.run import experiment
from rlhpc.run.algorithms import PLACEMENT_KEYS
from rlhpc.run.results import (
    LEGACY_RETURN_METRIC,
    RETURN_METRIC,
    STEPS_METRIC,
    checkpoint_due,
    flatten,
    stop_reached,
)
from rlhpc.run.resume import stop_changed
from rlhpc.run.search import POPULATION, packing_line, pbt_record, searched_values, trial_count, trials_at_once
from rlhpc.train import tracking
from rlhpc.train.stop_signal import StopSignal, grace_s
from rlhpc.train.trial_files import TrialFiles


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


class SchedulerStateKept(tune.Callback):
    """The scheduler's state across a resume. Tune saves a search's searcher and its callbacks' states with the
    experiment, not its scheduler: a resumed ASHA with empty rungs let a trial below the others' returns at a rung
    train to the end (seen: tests/test_search.py's lr=1e-7 trial, resumed before its first rung), and a resumed
    PBT saw every trial due for a perturbation at once. Kept as this callback's state (Tune saves it at each
    experiment checkpoint, by the callback's place in the list) and put back into the resumed run's scheduler,
    whose trials keep their ids: ASHA's rungs (each trial's return at each milestone) and brackets; PBT's (and
    PB2's) last score and perturbation time of each trial (not its last checkpoint: the next perturbation saves)."""

    PBT_KEPT = ("last_score", "last_perturbation_time", "last_train_time", "last_result")

    def __init__(self, scheduler):
        self.scheduler = scheduler if isinstance(scheduler, AsyncHyperBandScheduler | PopulationBasedTraining) \
            else None

    def __getstate__(self):
        return {"scheduler": None}  # pickled with the experiment at its start; a resume makes its own

    def get_state(self):
        scheduler = self.scheduler
        if isinstance(scheduler, PopulationBasedTraining):
            return {"pbt": {trial.trial_id: {key: getattr(state, key) for key in self.PBT_KEPT}
                            for trial, state in scheduler._trial_state.items()}}
        if scheduler is None:
            return None
        brackets = scheduler._brackets
        return {"rungs": [[(milestone, dict(recorded)) for milestone, recorded in b._rungs] for b in brackets],
                "brackets": {trial: brackets.index(b) for trial, b in scheduler._trial_info.items()},
                "num_stopped": scheduler._num_stopped}

    def set_state(self, state):
        scheduler = self.scheduler
        if isinstance(scheduler, PopulationBasedTraining) and "pbt" in state:
            for trial, trial_state in scheduler._trial_state.items():  # the restored trials, added before this
                for key, value in state["pbt"].get(trial.trial_id, {}).items():
                    setattr(trial_state, key, value)
        elif isinstance(scheduler, AsyncHyperBandScheduler) and "rungs" in state:
            brackets = scheduler._brackets
            for bracket, rungs in zip(brackets, state["rungs"], strict=True):
                bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
            scheduler._trial_info.update({trial: brackets[i] for trial, i in state["brackets"].items()})
            scheduler._num_stopped = state["num_stopped"]


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


def return_metric(spec) -> str:
    """The 100-episode return's result key, as this run's API stack reports it."""
    return LEGACY_RETURN_METRIC if spec.training.legacy_stack else RETURN_METRIC


def ranked_by(spec) -> str:
    """The result key PBT/PB2 and a --search rank trials by: --metric's (return: the 100-episode return)."""
    return return_metric(spec) if spec.search.metric == "return" else spec.search.metric


def search_algorithm(spec, at_once: int):
    """Tune's search_alg: --search's model (at most --max-concurrent trials at once, else as many as the allocation
    holds: it learns from the results of the trials before), or the grid and random draws of Tune's own generator,
    seeded by --seed (it draws from the clock otherwise) and at most --max-concurrent at once."""
    search, seed = spec.search, spec.training.seed
    if not search.searcher:
        if seed is None and not search.max_concurrent:
            return None
        return BasicVariantGenerator(random_state=seed, max_concurrent=search.max_concurrent or 0)
    metric = ranked_by(spec)
    if search.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial otherwise
        warnings.filterwarnings("ignore", message="Choices for a categorical distribution")  # lists: fine in memory
        searcher: Searcher = OptunaSearch(metric=metric, mode=search.mode, seed=seed)
    else:
        from ray.tune.search.bayesopt import BayesOptSearch

        warnings.filterwarnings("ignore", message="BayesOpt does not support specific sampling methods")  # --help
        searcher = BayesOptSearch(metric=metric, mode=search.mode, random_state=seed)
    return ConcurrencyLimiter(searcher, max_concurrent=max(1, search.max_concurrent or at_once))


class SearchedTrialName:
    """A --search's trial dirs named by the values picked, as a grid's are (Tune names a searcher's trials by the
    whole config: 'PPO_CartPole-v0_1c287228_1_disable_action_flattening=False,...')."""

    def __init__(self, space):
        self.space = space

    def __call__(self, trial) -> str:
        picked = searched_values(trial.config, self.space)
        values = ",".join(f"{key.split('.')[-1]}={value_text(value)}".replace(" ", "") for key, value in picked.items())
        return f"{trial.trainable_name}_{trial.config.get('env')}_{trial.trial_id}_{values}"[:120]


class RecordedExploits:
    """Tune's PopulationBasedTraining (or PB2) that says each exploit as it happens (a line) and keeps it in
    <experiment>/rlhpc_scheduler.json (ASHA's decisions' file): which trial took which trial's weights, at which
    iterations and scores, and its searched values before and after. The file is read and appended to, so a
    resumed search (Tune pickles the scheduler with the experiment) adds to it. Mixed into either (RecordedPBT,
    RecordedPB2): the attributes used are PopulationBasedTraining's."""

    scheduler_name = "pbt"
    _metric: str | None
    _perturbation_interval: float
    _trial_state: dict

    def __init__(self, *, experiment_path: str, searched, all_at_once: bool, seed=None, **kwargs):
        super().__init__(**kwargs)  # PopulationBasedTraining's, after this in the MRO
        self.experiment_path = experiment_path
        self.searched = searched  # the search space: which keys PBT mutates
        self.all_at_once = all_at_once  # the allocation holds every trial at once
        self._draws = random.Random(seed).getstate()  # the explore draws' own generator state (_get_new_config)

    def _get_new_config(self, trial, trial_to_clone):
        # PBT's explore draws from the random module, which Ray's code in this process draws from too: a state of
        # their own makes --seed repeat them (seen: seeding the module alone gave another draw when run again).
        outside = random.getstate()
        random.setstate(self._draws)
        try:
            return super()._get_new_config(trial, trial_to_clone)  # type: ignore[misc]
        finally:
            self._draws = random.getstate()
            random.setstate(outside)

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        # Asynchronous PBT pauses a trial at its perturbation while another is paused or pending, to share
        # resources in turns. An exploited trial is paused until its new actor starts: with room for every trial,
        # pausing others then only costs each a restart (seen: 2 extra restarts in a 2-trial search).
        if decision == TrialScheduler.PAUSE and self.all_at_once:
            return TrialScheduler.CONTINUE
        return decision

    def _exploit(self, tune_controller, trial, trial_to_clone):
        # The results PBT kept: a trial's own flattened, the saved checkpoint's as the trial reported it (nested).
        own, other = flatten(self._trial_state[trial].last_result or {}), \
            flatten(self._trial_state[trial_to_clone].last_result or {})
        entry = {"trial": os.path.basename(trial.path), "iteration": own.get("training_iteration"),
                 "score": own.get(self._metric), "from": os.path.basename(trial_to_clone.path),
                 "from_iteration": other.get("training_iteration"), "from_score": other.get(self._metric),
                 "from_steps": other.get(STEPS_METRIC),  # the exploited trial's count goes on from this one
                 "before": searched_values(trial.config, self.searched)}
        super()._exploit(tune_controller, trial, trial_to_clone)  # type: ignore[misc]
        entry["after"] = searched_values(trial.config, self.searched)
        changed = ", ".join(f"{key} {value_text(entry['before'].get(key))} -> {value_text(value)}"
                            for key, value in entry["after"].items())
        print(f"[{trial.trial_id}] {self.scheduler_name}: at iteration {entry['iteration']} takes the weights of "
              f"{trial_to_clone.trial_id} (iteration {entry['from_iteration']}, {value_text(entry['from_score'])} "
              f"against {value_text(entry['score'])}); {changed}", flush=True)
        path, record = pbt_record(self.experiment_path, self._perturbation_interval, self._metric,
                                  self.scheduler_name)
        record["exploits"].append(entry)
        experiment.write_json(path, record)


class RecordedPBT(RecordedExploits, PopulationBasedTraining):
    """--scheduler pbt: Tune's PopulationBasedTraining, its exploits said and kept (RecordedExploits)."""


class RecordedPB2(RecordedExploits, PB2):
    """--scheduler pb2: Tune's PB2 (it needs scikit-learn when made: the search extra), its exploits said and kept."""

    scheduler_name = "pb2"

def value_text(value) -> str:
    """A score or searched value, short: 1e-06, 22.44, [64, 64]."""
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def population_based(spec, config_keys, all_at_once: bool):
    """--scheduler pbt: every --perturbation-interval iterations, the worst quarter of the trials (by --metric;
    return: the 100-episode return) take the weights and config of one of the best quarter, with the searched
    keys perturbed: a --grid's value moves to a neighbour in its list, a --uniform/--loguniform value x0.8 or x1.2,
    or either is drawn anew (1 time in 4). With --seed those draws repeat (as far as the trials' order allows).
    pb2: the same exploits; the new values are where PB2's Gaussian process (of the returns' change against the
    values) expects the most, within the --uniform/--loguniform ranges."""
    search = spec.search
    metric = ranked_by(spec)
    # RLlib's Algorithm has no reset_config, so reusing actors would not spare the restart: Tune's hint is noise.
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
    common = dict(experiment_path=spec.output.resume_dir or spec.output.experiment_dir, searched=search.space,
                  all_at_once=all_at_once, seed=spec.training.seed, time_attr="training_iteration", metric=metric,
                  mode=search.mode, perturbation_interval=search.perturbation_interval)
    if search.scheduler == "pb2":
        # scikit-learn's fit of the GP says when a length scale sits at its bound: a few points, as expected early.
        warnings.filterwarnings("ignore", message="The optimal value found for dimension")
        bounds: dict = {}
        for path, _, values in search.space:  # ranges only (rlhpc.run.search.check_population)
            place(bounds, path, list(values), config_keys)
        return RecordedPB2(**common, hyperparam_bounds=bounds)
    return RecordedPBT(**common, hyperparam_mutations=mutations(search.space, config_keys))


def mutations(specs, config_keys) -> dict:
    """PBT's hyperparam_mutations: each searched key's --grid list or --uniform/--loguniform range, where
    search_space puts the key."""
    found: dict = {}
    for path, kind, values in specs:
        place(found, path, list(values) if kind == "grid" else sampler(kind, values), config_keys)
    return found


def sampler(kind: str, values):
    """A search key's Tune space: tune.grid_search, tune.uniform or tune.loguniform."""
    return {"grid": lambda v: tune.grid_search(list(v)), "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v)}[kind](values)


def place(tree: dict, path, value, config_keys) -> None:
    """tree[key][...][leaf] = value for a dotted config path; the top key as the config stores it (config_keys:
    the config dict's keys; model_config is stored as _model_config)."""
    root = path[0]
    parts = [root if root in config_keys else f"_{root}", *path[1:]]
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def scheduler(spec, config_keys=(), all_at_once: bool = False):
    """--scheduler asha: Tune's ASHAScheduler on the 100-episode return, in iterations; its last rung is the stop
    iteration (else grace x factor^4). hyperband: Tune's HyperBandScheduler, the same rungs in brackets (it pauses
    a trial at its rung until its bracket's others get there). pbt/pb2: population_based (config_keys: the
    param_space's keys). None: every trial runs to its end."""
    search = spec.search
    if search.scheduler in POPULATION:
        return population_based(spec, config_keys, all_at_once)
    if search.scheduler not in ("asha", "hyperband"):
        return None
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    max_t = spec.stop.criteria.get("training_iteration") or search.grace_period * search.reduction_factor ** 4
    metric = return_metric(spec)  # always the return: the stopped trials are the ones that learn least
    if search.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", metric=metric, mode="max", max_t=int(max_t),
                                  reduction_factor=search.reduction_factor)
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode="max", max_t=int(max_t),
                         grace_period=search.grace_period, reduction_factor=search.reduction_factor)


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
              if r.error or not stop_reached(r.metrics or {}, stop)]
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


def print_packing(spec, config) -> int:
    """How many trials run at once in this allocation, and that the rest queue (rlhpc.run.search.packing_line);
    -> that number."""
    import ray

    from rlhpc.algo.config import resource_request, total_resources

    search = spec.search
    per_trial = total_resources(resource_request(algorithm_class(spec.training.algo), config))
    trials = trial_count(search.space, search.num_samples, search.searcher)
    have = ray.cluster_resources()
    print(packing_line(trials, per_trial, have, search.scheduler, search.max_concurrent), flush=True)
    return trials_at_once(trials, per_trial, have, search.max_concurrent)


def search_space(config, specs, searcher=None) -> dict:
    """The config as Tune's param_space dict, with search spaces where the user asked for them (every
    candidate value was checked against the config by rlhpc.algo.config.build_config). A --search model takes
    a --grid's values as categories (tune.choice) to pick from, not a grid to run."""
    space = config.to_dict()
    for path, kind, values in specs:
        domain = tune.choice(list(values)) if searcher and kind == "grid" else sampler(kind, values)
        place(space, path, domain, config_keys=set(space))  # model_config is _model_config
    return space
