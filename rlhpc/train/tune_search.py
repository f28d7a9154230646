"""What a Tune run searches and how: the search space, the searcher (--search), the scheduler (--scheduler) with the
exploits it records and its state kept across a resume, and how many trials run at once. rlhpc.train.tune_run makes
the Tuner from these.

--scheduler pbt is Tune's PopulationBasedTraining (RecordedPBT; pb2, Tune's PB2, alike): a trial that exploits another
is paused, given the other's config (its searched keys perturbed) and restarted from the other's checkpoint, which PBT
itself has the better trials save at each perturbation (Tune's _schedule_trial_save), whatever --checkpoint-freq says.
RLlib's Algorithm has no reset_config, so each exploit starts a new trial actor; its restore
(Algorithm.restore_from_path, the new API stack's) loads the learner's weights and optimizer and syncs them to the env
runners. The optimizer's state carries the other trial's learning rate: the new config's lr is set after the first
update (RLlib's Learner sets the lr from the config's schedule after each update).

Private APIs used here, and why: `PopulationBasedTraining._exploit` and `._trial_state`: the one place PBT decides an
exploit (Tune calls no callback for it), and each trial's last score there; `._get_new_config`: where PBT draws a new
config, given a generator of its own (RecordedPBT). ASHA's `_brackets`/`_trial_info`/`_num_stopped` and PBT's
`_trial_state`: Tune does not save a scheduler's state with the experiment; SchedulerStateKept keeps it and puts it
back into the restored scheduler.
"""

import os
import random
import warnings

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from rlhpc.algo.config import algorithm_class
from rlhpc.run import experiment
from rlhpc.run.results import LEGACY_RETURN_METRIC, RETURN_METRIC, STEPS_METRIC, flatten
from rlhpc.run.search import POPULATION, packing_line, pbt_record, searched_values, trial_count, trials_at_once


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
