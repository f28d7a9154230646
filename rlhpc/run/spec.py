"""Every setting of a run, resolved once from the flags: the one object the rest of the trainer reads.

    flags (rlhpc.run.cli) -> RunSpec (here) -> env (rlhpc.envs.sources) -> AlgorithmConfig (rlhpc.algo.config)
        -> backend (rlhpc.train.inprocess or rlhpc.train.tune_run) -> report (rlhpc.outputs.report)

Defaults that depend on other flags are decided here and nowhere else: the experiment name, the stop
criteria, the search metric and its mode, --max-failures, the address, where the learners go, and whether
the run trains in this process or through Tune. `--print-config` shows the result ("spec"); the run
records it in its experiment dir (rlhpc.run.experiment).
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
from rlhpc.run.defaults import tuned_defaults
from rlhpc.run.results import EVAL_RETURN_METRIC, LEGACY_RETURN_METRIC, RETURN_METRIC, target_reward

# These learn from recorded data (config key input_), not by acting in an env.
OFFLINE_ALGORITHMS = {"BC", "CQL", "IQL", "MARWIL"}
DEFAULT_MAX_FAILURES = {"cluster": 3, "local": 0}  # a cluster loses nodes; a local crash is the env's bug
INPROCESS, TUNE = "inprocess", "tune"
# --vectorize auto: sub-envs step in parallel processes when one step takes at least this long. Below it the
# pipes to and from the processes cost more than the step (benchmarks/README.md, "sync or async").
ASYNC_FROM_MS = 1.0
# The train batch keeps at least this many steps from every sampling env, as SB3's n_envs x n_steps does:
# more env runners make the batch bigger instead of each runner's fragment shorter.
MIN_STEPS_PER_ENV = 32


@dataclasses.dataclass(frozen=True)
class RunSpec:
    algo: str
    env: env_sources.EnvSource
    env_config: MappingProxyType
    framework: str
    # where and with what
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
    flatten_observations: bool  # RLlib's default networks take Box observations only
    agent_policy: MappingProxyType  # a multi-agent env's agent -> policy id (rlhpc.envs.multi_agent); empty: one agent
    policies_reason: str  # how they were chosen, for the first line
    # what to train
    seed: int | None
    overrides: tuple  # --set as ((path...), value) pairs, applied last
    search: tuple  # ((path...), kind, values) from --grid/--uniform/--loguniform
    num_samples: int
    metric: str
    mode: str
    eval_interval: int  # iterations between greedy evaluations (0: none); the best checkpoint is kept
    eval_episodes: int
    # when to stop, and where the results go
    stop: MappingProxyType
    as_test: bool
    max_failures: int
    checkpoint_freq: int
    wandb: str | None  # "offline" or "online" (rlhpc.train.tracking)
    mlflow: str | None  # the MLflow tracking URI: a file store's file:///... or a server's
    name: str
    storage_path: str
    experiment_dir: str
    resume_dir: str | None  # the experiment to continue, None for a new run
    changes: tuple  # what --resume changed: (flag, from, to, trains) each (rlhpc.run.resume)
    backend: str  # INPROCESS or TUNE
    print_config: bool
    command_line: tuple  # as started, without any token
    flags: tuple  # the trainer's own flags, without any token: what --resume parses again (rlhpc.run.resume)
    config_file: MappingProxyType | None  # the experiment file among them: path, entry, text (rlhpc.run.config_file)
    probe: env_sources.Probe = dataclasses.field(repr=False, compare=False)  # the env's spaces and creator

    @property
    def policies(self) -> tuple:
        return tuple(sorted(set(self.agent_policy.values())))

    @property
    def legacy_stack(self) -> bool:
        return self.framework == "tf2"  # RLlib's TensorFlow support exists only on the legacy API stack

    @property
    def target_reward(self):
        return target_reward(self.stop)

    def record(self) -> dict:
        """The spec as JSON data (what --print-config shows and the run keeps)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "probe"}
        data.update(env=self.env.record(), env_config=dict(self.env_config), stop=dict(self.stop),
                    agent_policy=dict(self.agent_policy),
                    overrides=[[".".join(path), value] for path, value in self.overrides],
                    search=[[".".join(path), kind, list(values)] for path, kind, values in self.search],
                    command_line=list(self.command_line), flags=list(self.flags),
                    config_file=dict(self.config_file) if self.config_file else None,
                    changes=[dict(zip(("flag", "from", "to", "trains"), c, strict=True)) for c in self.changes])
        return data


def resolve(args, *, envs=None, stop_reward_for=None, flags=(), changes=(), from_file=None) -> RunSpec:
    """The parsed flags -> the RunSpec; bad input is a UserError. Call after rlhpc.train.cluster.prepare_auth.

    envs: {name: env class} a trainer script offers; stop_reward_for(env_name, env_config) -> float | None
    gives a default stop reward for envs without a Gymnasium spec. flags: the command line args was parsed
    from (recorded for --resume); changes: what --resume changed (rlhpc.run.resume.settings); from_file: the
    experiment file among those flags (rlhpc.run.config_file).
    """
    from rlhpc.run.algorithms import resolve_algorithm
    from rlhpc.run.search import METRICS, parse_search

    algo = resolve_algorithm(args.run)
    overrides = tuple((tuple(path), value) for path, value in parse_assignments(args.set, "--set"))
    if algo in OFFLINE_ALGORITHMS and not any(path == ("input_",) for path, _ in overrides):
        raise UserError(f"{algo} learns from recorded data, not from an env: give it --set input_=PATH "
                        "or pick an online algorithm (PPO, DQN, SAC, APPO, IMPALA)")
    env_config = env_config_from(args.env_config)
    source, creator = env_sources.find(args.name_env, envs, ray_registry=True)
    legacy = args.framework == "tf2"
    tuned = tuned_defaults(algo, source.label)  # per env by its name: the class for path/to/file.py:Class
    set_keys = dict((path, value) for path, value in overrides if len(path) == 1)
    num_envs = set_keys.get(("num_envs_per_env_runner",)) or args.num_envs_per_runner \
        or tuned.get("num_envs_per_env_runner") or 1
    probe = env_sources.probe(source, creator, env_config, timed=args.vectorize == "auto" and num_envs > 1)
    if probe.multi_agent:
        if legacy:
            raise UserError(f"{source.name} is a multi-agent env: train it with --framework torch (the new API "
                            "stack); tf2 here runs RLlib's legacy stack")
        agent_policy, policies_reason = multi_agent.resolve(args.policies, probe.agent_spaces, source.name)
    else:
        multi_agent.not_multi_agent(args.policies, source.name)
        agent_policy, policies_reason = {}, "one agent"

    default_reward = probe.spec.reward_threshold if probe.spec else (
        stop_reward_for(args.name_env, env_config) if stop_reward_for else None)
    if args.stop_on == "eval" and not args.eval_interval:
        raise UserError("--stop-on eval stops on the greedy evaluation's return: give --eval-interval N too")
    if args.eval_interval and legacy:
        raise UserError("--eval-interval needs the new API stack (--framework torch)")
    stop = stop_criteria(args, default_reward, legacy)
    search = tuple((tuple(path), kind, tuple(values)) for path, kind, values in parse_search(args))
    # The tutorial's --redis-password meant "join the running cluster" (rlhpc.train.cluster.prepare_auth).
    address = args.address or ("auto" if args.redis_password else None)
    max_failures = args.max_failures if args.max_failures is not None else \
        DEFAULT_MAX_FAILURES["cluster" if address else "local"]

    num_env_runners = args.num_cpus
    if args.local_mode and num_env_runners:
        warn(f"--local-mode samples in the driver on one core: ignoring --num-cpus {num_env_runners}")
        num_env_runners = 0
    num_learners, gpus_per_learner = learner_placement(args, legacy)
    vectorize, vectorize_reason = vectorize_mode(args.vectorize, num_envs, probe, set_keys, legacy)
    if probe.multi_agent and vectorize == "async":  # rllib/env/vector/registration.py: "not implemented, yet"
        if args.vectorize == "async" or ("gym_env_vectorize_mode",) in set_keys:
            raise UserError(f"{source.name} is a multi-agent env, whose sub-envs RLlib 2.60 steps only one after "
                            "another: drop --vectorize async; for a slow simulator raise --num-cpus (env runners "
                            "step in parallel)")
        vectorize, vectorize_reason = "sync", f"{vectorize_reason}, but RLlib steps multi-agent envs only sync"
    batch = tuned.get("train_batch_size_per_learner")
    if batch and ("train_batch_size_per_learner",) not in set_keys:
        batch = max(batch, max(1, num_env_runners) * num_envs * MIN_STEPS_PER_ENV)
    else:
        batch = None  # the algorithm's own, or the user's --set

    wandb_mode, mlflow_uri = tracking_flags.check(args.wandb, args.mlflow)
    name = args.name or experiment.path_safe(source.label)
    storage_path = os.path.abspath(os.path.expanduser(args.storage_path))
    experiment_path = experiment.experiment_dir(storage_path, name)
    resume_dir = experiment.find_resume(args.resume, experiment_path) if args.resume else None
    if resume_dir:
        backend = INPROCESS if experiment.has_inprocess_state(resume_dir) else TUNE
    else:
        backend = INPROCESS if trains_in_process(address, search, args, max_failures) else TUNE
    if backend == INPROCESS and address:
        raise UserError(f"{resume_dir} was trained by a local run in its own process: resume it without an address")
    trains_changes = [flag for flag, _, _, trains in changes if trains]
    if backend == TUNE and trains_changes:  # Tune restores its trials' configs and stop criteria as saved
        raise UserError(f"{resume_dir} trains through Tune, which resumes a run only as it was started: drop "
                        f"{', '.join(trains_changes)}, or start a new run")
    if resume_dir and batch is not None:  # more or fewer env runners now: the run keeps its batch size
        batch = experiment.read_record(resume_dir).get("train_batch_size") or batch

    import gymnasium

    spaces = [obs for obs, _ in probe.agent_spaces.values()] if probe.multi_agent else [probe.observation_space]
    return RunSpec(
        algo=algo, env=source, env_config=MappingProxyType(env_config), framework=args.framework,
        address=address, local_mode=args.local_mode, num_env_runners=num_env_runners,
        num_envs_per_runner=num_envs, vectorize=vectorize, vectorize_reason=vectorize_reason,
        train_batch_size=batch, num_gpus=args.num_gpus, num_learners=num_learners,
        num_gpus_per_learner=gpus_per_learner, runner_resource=args.runner_resource,
        learner_resource=args.learner_resource,
        flatten_observations=not legacy and any(space is not None and not isinstance(space, gymnasium.spaces.Box)
                                                for space in spaces),
        agent_policy=MappingProxyType(agent_policy), policies_reason=policies_reason,
        eval_interval=args.eval_interval, eval_episodes=args.eval_episodes,
        seed=args.seed, overrides=overrides, search=search, num_samples=args.num_samples, metric=args.metric,
        mode=args.mode or METRICS.get(args.metric, (None, "max"))[1],
        stop=MappingProxyType(stop), as_test=args.as_test, max_failures=max_failures,
        checkpoint_freq=args.checkpoint_freq, wandb=wandb_mode, mlflow=mlflow_uri,
        name=name, storage_path=storage_path, experiment_dir=experiment_path,
        resume_dir=resume_dir, changes=tuple(changes), backend=backend, print_config=args.print_config,
        command_line=tuple(without_token(sys.orig_argv)), flags=tuple(without_token(flags)),
        config_file=MappingProxyType(from_file) if from_file else None, probe=probe,
    )


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
