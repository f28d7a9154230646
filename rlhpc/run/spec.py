"""Every setting of a run, resolved once from the flags: the one object the rest of the trainer reads.

    flags (rlhpc.run.cli) -> RunSpec (here) -> env (rlhpc.envs.sources) -> AlgorithmConfig (rlhpc.algo.config)
        -> backend (rlhpc.train.inprocess or rlhpc.train.tune_run) -> report (rlhpc.outputs.report)

Defaults that depend on other flags are decided here and nowhere else: the experiment name, the stop
criteria, the search metric and its mode, --max-failures, the address, where the learners go, and whether
the run trains in this process or through Tune. `--print-config` shows the result ("spec"); the run
records it in its experiment dir (rlhpc.run.experiment).

A RunSpec is made of parts, each a frozen dataclass resolved by one function (resolve_<part>): training (what
trains), env, placement (where and on how much), stop, search, tracking, output (the experiment dir, and the run
a --resume continues). RunSpec.record() shows them flat, with the keys runs have always recorded.
"""

import dataclasses
import os
import sys
from types import MappingProxyType

from rlhpc.envs import multi_agent
from rlhpc.envs import sources as env_sources
from rlhpc.errors import UserError, warn
from rlhpc.run import experiment, tracking_flags
from rlhpc.run.cli import env_config_from, parse_assignments, without_token
from rlhpc.run.defaults import CONTINUOUS, OBSERVATIONS_AS_THEY_ARE, REWARDS_SCALED, env_family, tuned_defaults
from rlhpc.run.records import ConfigFile
from rlhpc.run.results import EVAL_RETURN_METRIC, LEGACY_RETURN_METRIC, RETURN_METRIC, STEPS_METRIC, target_reward
from rlhpc.run.search import POPULATION

# These learn from recorded data (config key input_), not by acting in an env.
OFFLINE_ALGORITHMS = {"BC", "CQL", "IQL", "MARWIL"}
DEFAULT_MAX_FAILURES = {"cluster": 3, "local": 0}  # a cluster loses nodes; a local crash is the env's bug
INPROCESS, TUNE = "inprocess", "tune"
# --env-timeout's default: this many times a step's measured time, and never less than the floor.
ENV_TIMEOUT_FACTOR, ENV_TIMEOUT_FLOOR_S = 1000, 60
# --vectorize auto: sub-envs step in parallel processes when one step takes at least this long. Below it the
# pipes to and from the processes cost more than the step (benchmarks/README.md, "sync or async").
ASYNC_FROM_MS = 1.0
# The train batch keeps at least this many steps from every sampling env, as SB3's n_envs x n_steps does:
# more env runners make the batch bigger instead of each runner's fragment shorter.
MIN_STEPS_PER_ENV = 32


# The parts of a RunSpec, each resolved from the flags by one function below (resolve_<part>). The run record and
# --print-config show them flat (RunSpec.record).
@dataclasses.dataclass(frozen=True)
class Training:
    """What the run trains: the algorithm and its settings."""

    algo: str
    framework: str
    seed: int | None
    overrides: tuple  # --set as ((path...), value) pairs, applied last
    eval_interval: int  # iterations between greedy evaluations (0: none); the best checkpoint is kept
    eval_episodes: int
    anneal_lr_until: int | None = None  # env steps at which the lr has fallen linearly to 0 (--anneal-lr); None: not
    anneal_lr_reason: str = ""  # why on or off, for --print-config
    scale_rewards: bool = False  # PPO learns from rewards scaled by a running std of the return (--scale-rewards)
    scale_rewards_reason: str = ""  # why on or off, for --print-config

    @property
    def lr_schedule(self) -> str:
        """The lr over the run, as the first lines and --print-config say it."""
        return f"annealed to 0 at {self.anneal_lr_until:,} env steps" if self.anneal_lr_until else "constant"

    @property
    def legacy_stack(self) -> bool:
        return self.framework == "tf2"  # RLlib's TensorFlow support exists only on the legacy API stack


@dataclasses.dataclass(frozen=True)
class Env:
    """The env it trains on, as probed on the driver, and which policy each agent plays."""

    source: env_sources.EnvSource
    config: MappingProxyType
    agent_policy: MappingProxyType  # a multi-agent env's agent -> policy id (rlhpc.envs.multi_agent); empty: one agent
    policies_reason: str  # how they were chosen, for the first line
    flatten_observations: bool  # RLlib's default networks take Box observations only
    step_timeout_s: float  # a step of one env copy longer than this is abandoned (rlhpc.envs.guard); 0: none
    timeout_reason: str  # why that limit, for the first line
    family: str  # the kind of env whose defaults apply (rlhpc.run.defaults.env_family)
    family_reason: str  # why, for the first line
    normalize_observations: bool  # a running mean/std filter in front of the policy (RLlib's MeanStdFilter)
    normalize_reason: str  # why on or off, for the first line
    probe: env_sources.Probe = dataclasses.field(repr=False, compare=False)  # the env's spaces and creator

    @property
    def policies(self) -> tuple:
        return tuple(sorted(set(self.agent_policy.values())))


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and on how much it runs (what a resume may change)."""

    address: str | None  # None: a local Ray
    local_mode: bool
    num_env_runners: int
    num_envs_per_runner: int  # --num-envs-per-runner, else the algorithm's tuned default (rlhpc/run/defaults.py)
    vectorize: str  # "sync" or "async": how each runner steps its envs
    vectorize_reason: str  # why, for the first line
    train_batch_size: int | None  # per learner: max(tuned default, sampling envs x MIN_STEPS_PER_ENV)
    num_gpus: float  # as asked; num_learners and num_gpus_per_learner say where they go
    num_learners: int
    num_gpus_per_learner: float
    runner_resource: str | None
    learner_resource: str | None
    max_failures: int


@dataclasses.dataclass(frozen=True)
class Stop:
    """When it stops."""

    criteria: MappingProxyType  # result key -> value (rlhpc.run.results.reached)
    as_test: bool  # exit 1 unless the stop reward was reached

    @property
    def target_reward(self):
        return target_reward(self.criteria)


@dataclasses.dataclass(frozen=True)
class Search:
    """The trials: a search space (empty: one trial), and what makes a trial best."""

    space: tuple  # ((path...), kind, values) from --grid/--uniform/--loguniform
    num_samples: int
    metric: str
    mode: str
    scheduler: str | None = None  # "asha": Tune stops the worse trials early; "pbt": population-based training
    grace_period: int = 2  # ASHA: iterations before a trial can be stopped
    reduction_factor: int = 3  # ASHA: the best 1/N go on at each rung
    perturbation_interval: int = 4  # PBT/PB2: iterations between a trial's exploit/explore steps
    searcher: str | None = None  # "optuna"/"bayesopt": a model picks each trial's values; None: grid and draws
    max_concurrent: int | None = None  # trials at once at most (None: as many as the allocation holds)


def scheduler_record(search: Search) -> list | None:
    """The scheduler and its settings as the run record keeps them (ASHA's as runs have always recorded it)."""
    if search.scheduler in POPULATION:
        return [search.scheduler, search.perturbation_interval]
    return [search.scheduler, search.grace_period, search.reduction_factor] if search.scheduler else None


@dataclasses.dataclass(frozen=True)
class Tracking:
    wandb: str | None  # "offline" or "online" (rlhpc.train.tracking)
    mlflow: str | None  # the MLflow tracking URI: a file store's file:///... or a server's


@dataclasses.dataclass(frozen=True)
class Output:
    """Where the results go: the experiment dir, its checkpoints, and the run it continues."""

    name: str
    storage_path: str
    experiment_dir: str
    checkpoint_freq: int
    resume_dir: str | None  # the experiment to continue, None for a new run
    changes: tuple  # what --resume changed: rlhpc.run.records.Change each (rlhpc.run.resume)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A run resolved: its parts, and how it was asked for."""

    training: Training
    env: Env
    placement: Placement
    stop: Stop
    search: Search
    tracking: Tracking
    output: Output
    backend: str  # INPROCESS or TUNE
    print_config: bool
    command_line: tuple  # as started, without any token
    flags: tuple  # the trainer's own flags, without any token: what --resume parses again (rlhpc.run.resume)
    config_file: ConfigFile | None  # the experiment file among them (rlhpc.run.config_file)

    def record(self) -> dict:
        """The spec as JSON data (what --print-config shows and the run keeps): flat, with the keys (in the order)
        runs have always recorded, which rlhpc.run.records.RunRecord reads back."""
        training, env, placement, search, output = self.training, self.env, self.placement, self.search, self.output
        return {
            "algo": training.algo, "env": env.source.record(), "env_config": dict(env.config),
            "framework": training.framework, "address": placement.address, "local_mode": placement.local_mode,
            "num_env_runners": placement.num_env_runners, "num_envs_per_runner": placement.num_envs_per_runner,
            "vectorize": placement.vectorize, "vectorize_reason": placement.vectorize_reason,
            "train_batch_size": placement.train_batch_size, "num_gpus": placement.num_gpus,
            "num_learners": placement.num_learners, "num_gpus_per_learner": placement.num_gpus_per_learner,
            "runner_resource": placement.runner_resource, "learner_resource": placement.learner_resource,
            "flatten_observations": env.flatten_observations, "env_timeout_s": env.step_timeout_s,
            "env_timeout_reason": env.timeout_reason, "agent_policy": dict(env.agent_policy),
            "policies_reason": env.policies_reason, "seed": training.seed,
            "overrides": [[".".join(path), value] for path, value in training.overrides],
            "search": [[".".join(path), kind, list(values)] for path, kind, values in search.space],
            "num_samples": search.num_samples, "metric": search.metric, "mode": search.mode,
            "scheduler": scheduler_record(search),
            "eval_interval": training.eval_interval, "eval_episodes": training.eval_episodes,
            "stop": dict(self.stop.criteria), "as_test": self.stop.as_test, "max_failures": placement.max_failures,
            "checkpoint_freq": output.checkpoint_freq, "wandb": self.tracking.wandb, "mlflow": self.tracking.mlflow,
            "name": output.name, "storage_path": output.storage_path, "experiment_dir": output.experiment_dir,
            "resume_dir": output.resume_dir, "changes": [change.to_json() for change in output.changes],
            "backend": self.backend, "print_config": self.print_config, "command_line": list(self.command_line),
            "flags": list(self.flags), "config_file": self.config_file.to_json() if self.config_file else None,
            "family": env.family, "normalize_observations": env.normalize_observations,
            "searcher": search.searcher, "max_concurrent": search.max_concurrent,
            "anneal_lr_until": training.anneal_lr_until, "scale_rewards": training.scale_rewards,
        }

    def with_experiment_dir(self, name: str, experiment_dir: str) -> "RunSpec":
        """The spec with the experiment dir a new run claimed (rlhpc.run.experiment.claim)."""
        return dataclasses.replace(self, output=dataclasses.replace(self.output, name=name,
                                                                      experiment_dir=experiment_dir))


def resolve(args, *, envs=None, stop_reward_for=None, flags=(), changes=(), from_file=None) -> RunSpec:
    """The parsed flags -> the RunSpec; bad input is a UserError. Call after rlhpc.train.cluster.prepare_auth.

    envs: {name: env class} a trainer script offers; stop_reward_for(env_name, env_config) -> float | None
    gives a default stop reward for envs without a Gymnasium spec. flags: the command line args was parsed
    from (recorded for --resume); changes: what --resume changed (rlhpc.run.resume.settings, Change each);
    from_file: the experiment file among those flags (rlhpc.run.config_file). The parts are resolved in this
    order (an earlier part's error is the one shown), each by one function.
    """
    training = resolve_training(args)
    source, creator, env_config = find_env(args, envs)
    env = resolve_env(args, training, source, creator, env_config)
    # per kind of env (probed), then per env by its name: the class for path/to/file.py:Class
    tuned = tuned_defaults(training.algo, source.label, env.family)
    num_envs = envs_per_runner(args, training, tuned)
    stop = resolve_stop(args, training, env, stop_reward_for)
    training = with_lr_annealing(args, training, env, stop)
    training = with_reward_scaling(args, training, env)
    search = resolve_search(args)
    placement = resolve_placement(args, training, env, num_envs, tuned)
    tracking = resolve_tracking(args)
    output = resolve_output(args, source, changes)
    backend = resolve_backend(args, placement, search, output)
    placement = batch_kept_on_resume(placement, output.resume_dir)
    return RunSpec(training=training, env=env, placement=placement, stop=stop, search=search, tracking=tracking,
                   output=output, backend=backend, print_config=args.print_config,
                   command_line=tuple(without_token(sys.orig_argv)), flags=tuple(without_token(flags)),
                   config_file=from_file)


def resolve_training(args) -> Training:
    from rlhpc.run.algorithms import resolve_algorithm

    algo = resolve_algorithm(args.run)
    from rlhpc.run import old_keys

    overrides = old_keys.translate([(tuple(path), value) for path, value in parse_assignments(args.set, "--set")],
                                   legacy=args.framework == "tf2")  # the tutorial's keys onto the new stack's
    if algo in OFFLINE_ALGORITHMS and not any(path == ("input_",) for path, _ in overrides):
        raise UserError(f"{algo} learns from recorded data, not from an env: give it --set input_=PATH "
                        "or pick an online algorithm (PPO, DQN, SAC, APPO, IMPALA)")
    return Training(algo=algo, framework=args.framework, seed=args.seed, overrides=overrides,
                    eval_interval=args.eval_interval, eval_episodes=args.eval_episodes)


def top_level_sets(overrides: tuple) -> dict:
    """--set keys without a dot -> their values ({("lr",): 0.001})."""
    return dict((path, value) for path, value in overrides if len(path) == 1)


def find_env(args, envs) -> tuple:
    """-> (EnvSource, creator, env config) for --name-env and --env-config."""
    env_config = env_config_from(args.env_config)
    source, creator = env_sources.find(args.name_env, envs, ray_registry=True)
    return source, creator, env_config


def envs_per_runner(args, training: Training, tuned: dict) -> int:
    """--set num_envs_per_env_runner, --num-envs-per-runner, the algorithm's tuned default, or 1."""
    return top_level_sets(training.overrides).get(("num_envs_per_env_runner",)) or args.num_envs_per_runner \
        or tuned.get("num_envs_per_env_runner") or 1


def resolve_env(args, training: Training, source, creator, env_config: dict) -> Env:
    """The env probed on the driver (spaces, agents, a step's time when --vectorize auto has a choice), for a
    multi-agent env which policy each agent plays, its kind (whose defaults apply) and whether observations are
    normalized."""
    probe = env_sources.probe(source, creator, env_config, timed=True)
    if probe.agent_spaces is not None:  # a multi-agent env (probe.multi_agent)
        if training.legacy_stack:
            raise UserError(f"{source.name} is a multi-agent env: train it with --framework torch (the new API "
                            "stack); tf2 here runs RLlib's legacy stack")
        agent_policy, policies_reason = multi_agent.resolve(args.policies, probe.agent_spaces, source.name)
    else:
        multi_agent.not_multi_agent(args.policies, source.name)
        agent_policy, policies_reason = {}, "one agent"
    step_timeout, timeout_reason = env_timeout(args.env_timeout, probe.step_seconds)
    if not training.legacy_stack:  # an action space RLlib has no distribution for fails in its catalog, after Ray
        check_action_spaces(probe, source.name)
    family, family_reason = env_family(probe)
    normalize, normalize_reason = normalize_observations(getattr(args, "normalize_obs", "auto"), family, probe,
                                                         training, source)
    return Env(source=source, config=MappingProxyType(env_config), agent_policy=MappingProxyType(agent_policy),
               policies_reason=policies_reason, flatten_observations=needs_flattening(probe, training),
               step_timeout_s=step_timeout, timeout_reason=timeout_reason, family=family,
               family_reason=family_reason, normalize_observations=normalize, normalize_reason=normalize_reason,
               probe=probe)


def normalize_observations(asked: str, family: str, probe, training: Training, source) -> tuple:
    """-> (on, why) for --normalize-obs: auto is on for the continuous family (rlhpc.run.defaults), whose
    simulators give observations of very different scales (K, MW, prices), except for the envs
    rlhpc.run.defaults.OBSERVATIONS_AS_THEY_ARE names, and off for the rest. RLlib's
    MeanStdFilter is an env-to-module connector: the new API stack only (one filter per agent of a multi-agent env),
    and no action mask (it would scale the mask too)."""
    from rlhpc.envs.action_masks import masked_agents

    why_not = ("the legacy API stack (tf2) has no env-to-module connectors" if training.legacy_stack else
               "its observations carry an action mask" if masked_agents(probe) else None)
    if asked == "on" and why_not:
        raise UserError(f"--normalize-obs on: {why_not}; drop the flag (or --normalize-obs off)")
    if asked != "auto":
        return asked == "on", f"--normalize-obs {asked}"
    if why_not:
        return False, f"auto: off, {why_not}"
    if source.label in OBSERVATIONS_AS_THEY_ARE:
        return False, f"auto: off for {source.label}: {OBSERVATIONS_AS_THEY_ARE[source.label]}"
    if family == CONTINUOUS:
        return True, "auto: on for continuous actions"
    return False, f"auto: off for {family} actions"


def check_action_spaces(probe, name: str) -> None:
    """Each agent's action space (the env's, single-agent) is one RLlib can act in, or one line naming the env."""
    from rlhpc.envs.spaces import check_action_space

    agents = {agent: spaces[1] for agent, spaces in probe.agent_spaces.items()} if probe.agent_spaces is not None \
        else {None: probe.action_space}
    try:
        for agent, space in agents.items():
            check_action_space(space, agent)
    except UserError as e:
        raise UserError(f"{name}: {e}") from None


def env_timeout(asked: float | None, step_seconds: float | None) -> tuple:
    """-> (seconds, why): --env-timeout, else far above the step time measured on the driver, with a floor for
    steps that vary (a solver that converges slowly now and then) and for envs that could not be timed."""
    if asked is not None:
        return asked, "--env-timeout" if asked else "--env-timeout 0: no limit"
    if step_seconds is None:
        return ENV_TIMEOUT_FLOOR_S, "a step could not be timed"
    limit = max(ENV_TIMEOUT_FLOOR_S, ENV_TIMEOUT_FACTOR * step_seconds)
    return limit, f"{ENV_TIMEOUT_FACTOR}x a step's {step_seconds * 1000:.3g} ms, at least {ENV_TIMEOUT_FLOOR_S} s"


def needs_flattening(probe, training: Training) -> bool:
    """RLlib's default networks take a 1-D Box (and images of a few sizes): rlhpc.envs.spaces decides what else is
    flattened (the legacy stack flattens observations itself)."""
    from rlhpc.envs.spaces import needs_flattening as flattened

    return not training.legacy_stack and flattened(probe)


def resolve_stop(args, training: Training, env: Env, stop_reward_for) -> Stop:
    """The stop criteria: the --stop-* flags, else the env's reward threshold (or the script's stop_reward_for)."""
    probe = env.probe
    default_reward = probe.spec.reward_threshold if probe.spec else (
        stop_reward_for(args.name_env, dict(env.config)) if stop_reward_for else None)
    if args.stop_on == "eval" and not args.eval_interval:
        raise UserError("--stop-on eval stops on the greedy evaluation's return: give --eval-interval N too")
    if args.eval_interval and training.legacy_stack:
        raise UserError("--eval-interval needs the new API stack (--framework torch)")
    stop = stop_criteria(args, default_reward, training.legacy_stack)
    return Stop(criteria=MappingProxyType(stop), as_test=args.as_test)


def with_lr_annealing(args, training: Training, env: Env, stop: Stop) -> Training:
    """--anneal-lr: the lr (the defaults' or --set's) falls linearly to 0 at --stop-timesteps, as CleanRL's PPO
    anneals it over its total steps. auto: on for the continuous family (rlhpc.run.defaults: the measurement is
    there), when the run has a --stop-timesteps to anneal to; off for the rest. A resume that trains longer
    stretches the schedule to the new end."""
    asked = getattr(args, "anneal_lr", "auto")
    until = stop.criteria.get(STEPS_METRIC)
    if asked == "on" and not until:
        raise UserError("--anneal-lr on: the lr falls to 0 at --stop-timesteps: give --stop-timesteps N")
    if asked == "on" and training.legacy_stack:
        raise UserError("--anneal-lr on needs the new API stack (--framework torch)")
    if asked != "auto":
        on, why = asked == "on", f"--anneal-lr {asked}"
    elif training.legacy_stack:
        on, why = False, "auto: off on the legacy API stack"
    elif env.family != CONTINUOUS:
        on, why = False, f"auto: off for {env.family} actions"
    elif not until:
        on, why = False, "auto: off without --stop-timesteps (nothing to anneal to)"
    else:
        on, why = True, "auto: on for continuous actions"
    return dataclasses.replace(training, anneal_lr_until=int(until) if on and until else None, anneal_lr_reason=why)


def with_reward_scaling(args, training: Training, env: Env) -> Training:
    """--scale-rewards: PPO's learner divides rewards by a running std of the discounted return and clips them at +-10
    (rlhpc.algo.reward_scaling), as CleanRL's ppo_continuous_action does; returns are still reported in the env's
    units. auto: on for the envs rlhpc.run.defaults.REWARDS_SCALED names (the measurements are there: it pays where
    episodes end on a fall, and did not on HalfCheetah, whose episodes run their full length), off for the rest. One
    learner only: RLlib shares episodes out between learners.
    """
    asked = getattr(args, "scale_rewards", "auto")
    learners, _ = learner_placement(args, training.legacy_stack)
    why_not = (f"it is for PPO (its learner scales the rewards), not {training.algo}" if training.algo != "PPO" else
               "it needs the new API stack (--framework torch)" if training.legacy_stack else
               # RLlib splits each iteration's episodes between the learners, cutting some in two: each learner would
               # carry its own running return and std, so one episode's rewards would be scaled by different numbers.
               f"it works with one learner: --num-gpus {args.num_gpus:g} makes {learners}" if learners > 1 else None)
    if asked == "on" and why_not:
        raise UserError(f"--scale-rewards on: {why_not}")
    if asked != "auto":
        on, why = asked == "on", f"--scale-rewards {asked}"
    elif why_not:
        on, why = False, f"auto: off, {why_not}"
    elif env.source.label in REWARDS_SCALED:
        on, why = True, f"auto: on for {env.source.label}: {REWARDS_SCALED[env.source.label]}"
    else:
        on, why = False, "auto: off; on only for the envs rlhpc/run/defaults.py names"
    return dataclasses.replace(training, scale_rewards=on, scale_rewards_reason=why)


def resolve_search(args) -> Search:
    from rlhpc.run.search import METRICS, check_population, check_searcher, parse_search, trial_count

    space = tuple((tuple(path), kind, tuple(values)) for path, kind, values in parse_search(args))
    trials = trial_count(space, args.num_samples, args.search)
    check_searcher(args, space)
    if args.scheduler in POPULATION:
        check_population(args, space, trials)
    elif args.scheduler and trials < 2:
        raise UserError(f"--scheduler {args.scheduler} stops the worse trials of a search: give --grid, --uniform or "
                        "--loguniform with --num-samples N, for 2 trials or more")
    if args.scheduler and any(path == ("seed",) for path, _, _ in space):
        raise UserError(f"--scheduler {args.scheduler} with --seeds would stop the unlucky seeds and bias the band: "
                        "search first, then run the winner with --seeds")
    return Search(space=space, num_samples=args.num_samples, metric=args.metric,
                  mode=args.mode or METRICS.get(args.metric, (None, "max"))[1], scheduler=args.scheduler,
                  grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                  perturbation_interval=args.perturbation_interval, searcher=args.search,
                  max_concurrent=args.max_concurrent)


def resolve_placement(args, training: Training, env: Env, num_envs: int, tuned: dict) -> Placement:
    """Where it runs: the cluster, env runners and their envs, learners and GPUs, restarts, the batch size."""
    # The tutorial's --redis-password meant "join the running cluster" (rlhpc.train.cluster.prepare_auth).
    address = args.address or ("auto" if args.redis_password else None)
    max_failures = args.max_failures if args.max_failures is not None else \
        DEFAULT_MAX_FAILURES["cluster" if address else "local"]
    num_env_runners = args.num_cpus
    if args.local_mode and num_env_runners:
        warn(f"--local-mode samples in the driver on one core: ignoring --num-cpus {num_env_runners}")
        num_env_runners = 0
    num_learners, gpus_per_learner = learner_placement(args, training.legacy_stack)
    set_keys = top_level_sets(training.overrides)
    vectorize, vectorize_reason = vectorize_for(args, num_envs, env, set_keys, training.legacy_stack)
    return Placement(
        address=address, local_mode=args.local_mode, num_env_runners=num_env_runners, num_envs_per_runner=num_envs,
        vectorize=vectorize, vectorize_reason=vectorize_reason,
        train_batch_size=batch_size(tuned, set_keys, num_env_runners, num_envs), num_gpus=args.num_gpus,
        num_learners=num_learners, num_gpus_per_learner=gpus_per_learner, runner_resource=args.runner_resource,
        learner_resource=args.learner_resource, max_failures=max_failures)


def vectorize_for(args, num_envs: int, env: Env, set_keys: dict, legacy: bool) -> tuple:
    """vectorize_mode, and sync for a multi-agent env (RLlib 2.60 steps its sub-envs only one after another)."""
    vectorize, vectorize_reason = vectorize_mode(args.vectorize, num_envs, env.probe, set_keys, legacy)
    if env.probe.multi_agent and vectorize == "async":  # rllib/env/vector/registration.py: "not implemented, yet"
        if args.vectorize == "async" or ("gym_env_vectorize_mode",) in set_keys:
            raise UserError(f"{env.source.name} is a multi-agent env, whose sub-envs RLlib 2.60 steps only one after "
                            "another: drop --vectorize async; for a slow simulator raise --num-cpus (env runners "
                            "step in parallel)")
        vectorize, vectorize_reason = "sync", f"{vectorize_reason}, but RLlib steps multi-agent envs only sync"
    return vectorize, vectorize_reason


def batch_size(tuned: dict, set_keys: dict, num_env_runners: int, num_envs: int) -> int | None:
    """The tuned batch per learner, raised to keep MIN_STEPS_PER_ENV from every sampling env; None: the
    algorithm's own, or the user's --set."""
    batch = tuned.get("train_batch_size_per_learner")
    if batch and ("train_batch_size_per_learner",) not in set_keys:
        return max(batch, max(1, num_env_runners) * num_envs * MIN_STEPS_PER_ENV)
    return None


def resolve_tracking(args) -> Tracking:
    wandb_mode, mlflow_uri = tracking_flags.check(args.wandb, args.mlflow)
    return Tracking(wandb=wandb_mode, mlflow=mlflow_uri)


def resolve_output(args, source, changes) -> Output:
    """The experiment dir: --name (default: the env's) under --storage-path, or the run --resume continues."""
    name = args.name or experiment.path_safe(source.label)
    storage_path = os.path.abspath(os.path.expanduser(args.storage_path))
    experiment_path = experiment.experiment_dir(storage_path, name)
    resume_dir = experiment.find_resume(args.resume, experiment_path) if args.resume else None
    return Output(name=name, storage_path=storage_path, experiment_dir=experiment_path,
                  checkpoint_freq=args.checkpoint_freq, resume_dir=resume_dir, changes=tuple(changes))


def resolve_backend(args, placement: Placement, search: Search, output: Output) -> str:
    """INPROCESS or TUNE: a resumed run keeps its own; a resume that Tune cannot honour is refused."""
    resume_dir = output.resume_dir
    if resume_dir:
        backend = INPROCESS if experiment.has_inprocess_state(resume_dir) else TUNE
    else:
        backend = INPROCESS if trains_in_process(placement.address, search.space, args, placement.max_failures) \
            else TUNE
    if backend == INPROCESS and placement.address:
        raise UserError(f"{resume_dir} was trained by a local run in its own process: resume it without an address")
    trains_changes = [change.flag for change in output.changes if change.trains]
    if backend == TUNE and trains_changes:  # Tune restores its trials' configs and stop criteria as saved
        raise UserError(f"{resume_dir} trains through Tune, which resumes a run only as it was started: drop "
                        f"{', '.join(trains_changes)}, or start a new run")
    return backend


def batch_kept_on_resume(placement: Placement, resume_dir: str | None) -> Placement:
    """More or fewer env runners now: a resumed run keeps the batch size it started with."""
    if not resume_dir or placement.train_batch_size is None:
        return placement
    record = experiment.read_record(resume_dir)
    return dataclasses.replace(placement, train_batch_size=(record and record.train_batch_size)
                               or placement.train_batch_size)


def stop_criteria(args, default_reward, legacy: bool) -> dict:
    reward = args.stop_reward if args.stop_reward is not None else default_reward
    stop = {}
    if reward is not None:
        stop[LEGACY_RETURN_METRIC if legacy else EVAL_RETURN_METRIC if args.stop_on == "eval" else RETURN_METRIC] = \
            reward
    if args.stop_iters:
        stop["training_iteration"] = args.stop_iters
    if args.stop_timesteps:
        stop["num_env_steps_sampled_lifetime"] = args.stop_timesteps
    if args.stop_time:
        stop["time_total_s"] = args.stop_time
    if not stop:
        warn(f"{args.name_env} has no reward threshold and no --stop-* flag was given: stopping after 100 iterations")
        stop["training_iteration"] = 100
    return stop


def learner_placement(args, legacy: bool) -> tuple:
    """GPUs -> (num_learners, GPUs per learner), as in RLlib's scaling guide.

    <=1 GPU: the one (local) learner runs in the algorithm's process on that GPU (share);
    G>1: G remote learners with one GPU each. A learner pinned to a node by a custom
    resource must be a remote actor, since only remote learners get their own placement.
    (The legacy stack has no learner actors: its driver takes all the GPUs.)
    """
    gpus = 0.0 if args.local_mode else args.num_gpus  # --local-mode trains on the CPU
    if legacy:
        return 0, gpus
    learners, per_learner = (int(gpus), 1) if gpus > 1 else (0, gpus)
    if args.learner_resource:
        learners = max(1, learners)
    return learners, per_learner


def vectorize_mode(asked: str, num_envs: int, probe, set_keys: dict, legacy: bool) -> tuple:
    """-> ("sync" or "async", why): --vectorize, or for auto the step time measured on the driver."""
    if ("gym_env_vectorize_mode",) in set_keys:
        return str(set_keys[("gym_env_vectorize_mode",)]).lower(), "--set gym_env_vectorize_mode"
    if asked != "auto":
        return asked, f"--vectorize {asked}"
    if legacy:
        return "sync", "the legacy API stack (tf2) steps its envs itself"
    if num_envs < 2:
        return "sync", "one env per runner"
    if probe.step_seconds is None:
        return "sync", "a step could not be timed"
    step_ms = probe.step_seconds * 1000
    if step_ms >= ASYNC_FROM_MS:
        return "async", f"a step takes {step_ms:.1f} ms, >= {ASYNC_FROM_MS:g} ms"
    return "sync", f"a step takes {step_ms:.3f} ms, < {ASYNC_FROM_MS:g} ms"


def trains_in_process(address, search, args, max_failures) -> bool:
    """Local, one trial, CPU, new API stack, no restarts: everything else goes through Tune. (GPU runs
    too: there Ray hands the GPU to the actor it places; training in the driver was never tried on a
    GPU. --max-failures: Tune restarts a crashed trial from its last checkpoint.)"""
    return not address and not search and args.num_samples == 1 and args.framework != "tf2" \
        and not args.num_gpus and not max_failures
