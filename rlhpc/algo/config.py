"""From a RunSpec (rlhpc.run.spec) to an RLlib AlgorithmConfig, checking every key and value a user can get wrong.

Checks happen here, before Ray starts, so a typo costs a second, not a queue wait.
"""

import copy
import dataclasses
import difflib
import functools
import json
import warnings

from rlhpc.envs import action_masks
from rlhpc.errors import UserError
from rlhpc.run.defaults import env_entry, tuned_defaults

DEFAULT_SAMPLE_TIMEOUT_S = 60.0  # RLlib's own, kept as the floor


def algorithm_class(name: str):
    """'PPO' -> the PPO Algorithm class (Tune's trainable). Read from RLlib's registry of algorithms, which imports
    only that algorithm: Tune's get_trainable_cls registers all of them first, and importing DreamerV3 builds a
    CartPole whose Gymnasium checker warnings reach stderr."""
    from ray.rllib.algorithms.registry import ALGORITHMS

    return ALGORITHMS[name]()[0]


def flatten_observations(env=None, spaces=None, device=None):
    """RLlib's default networks take Box observations only; this one-hots Discrete ones."""
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations()


def flatten_agents_observations(env=None, spaces=None, device=None, agent_ids=None):
    """The same for every agent of a multi-agent env (or those in agent_ids: the others' go in whole)."""
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations(multi_agent=True, agent_ids=agent_ids)


def normalized_observations(env=None, spaces=None, device=None, flatten=None, multi_agent=False):
    """RLlib's MeanStdFilter after the flattening (it keeps a running mean/std per element of a Box): observations of
    every scale reach the network near 0 with spread 1, clipped to +-10 as CleanRL's are. Its statistics are the env
    runners' connector state: merged across runners at each iteration (EnvRunnerGroup.sync_env_runner_states), saved
    in checkpoints under env_runner/, restored on --resume, read by rlhpc.evaluate. A multi-agent env's agents each
    get their own statistics (RLlib keys them by agent id), also when they share a policy."""
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    pieces = flatten(env, spaces, device) if flatten else []
    return [*(pieces if isinstance(pieces, list) else [pieces]), MeanStdFilter(multi_agent=multi_agent)]


def use_action_masks(config, spec) -> dict:
    """Agents whose observation carries an action mask (rlhpc.envs.action_masks) get the masking policy network
    (rlhpc.algo.action_masking). -> {agent: observation key}, agent None for a single-agent env; {} without masks."""
    probe = getattr(spec.env, "probe", None)
    masked = action_masks.masked_agents(probe) if probe is not None else {}
    if not masked:
        return masked
    training = spec.training
    if training.legacy_stack or training.algo != "PPO":
        drop = "--framework tf2" if training.legacy_stack else "--algo " + training.algo
        raise UserError(f"the env's observation carries an {action_masks.MASK_KEY!r}: action masks are supported "
                        f"with PPO on torch (drop {drop})")
    from ray.rllib.core.rl_module import MultiRLModuleSpec, RLModuleSpec

    from rlhpc.algo.action_masking import ActionMaskingTorchRLModule

    if None in masked:
        config.rl_module(rl_module_spec=RLModuleSpec(module_class=ActionMaskingTorchRLModule))
    else:  # policies of unmasked agents keep RLlib's default module
        policies = sorted({spec.env.agent_policy[agent] for agent in masked})
        config.rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={
            policy: RLModuleSpec(module_class=ActionMaskingTorchRLModule) for policy in policies}))
    return masked


def observation_connector(spec, masked: dict):
    """FlattenObservations where the spec asks for it, except for observations that carry an action mask: the
    masking module takes the Dict whole and flattens its inner observation itself."""
    if not spec.env.flatten_observations or None in masked:
        return None
    if not spec.env.agent_policy:
        return flatten_observations
    unmasked = [agent for agent in spec.env.agent_policy if agent not in masked]
    if not masked:
        return flatten_agents_observations
    # An empty agent_ids would mean every agent to FlattenObservations.
    return functools.partial(flatten_agents_observations, agent_ids=unmasked) if unmasked else None


def _known_keys(config):
    """Settable keys: public attributes plus the properties backed by a private one."""
    names = set(vars(config))
    return sorted({n.lstrip("_") for n in names} - {n for n in names if n.startswith("__")})


def _set_nested(tree: dict, path, value, full_key: str):
    for part in path[:-1]:
        node = tree.get(part)
        if node is None:
            node = tree[part] = {}
        if not isinstance(node, dict):
            raise UserError(f"cannot set {full_key}: {part} is not a dict")
        tree = node
    tree[path[-1]] = value


@functools.cache
def _unset_by_default(algo_name: str, key: str) -> bool:
    """Whether RLlib's own default for this key is None (a user may set it back: --set grad_clip=null)."""
    return getattr(algorithm_class(algo_name).get_default_config(), key, 0) is None


def _check_type(key: str, current, value, algo_name: str):
    """Catch `--set lr=abc` here rather than as a TypeError deep inside a learner."""
    if value is None and _unset_by_default(algo_name, key):
        return value  # back to RLlib's "none" (grad_clip: no clipping), which a family default replaced
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise UserError(f"bad value for {key}: expected true or false, got {value!r}")
        return value
    if isinstance(current, (int, float)) and current is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            raise UserError(f"bad value for {key}: expected a number, got {value!r}")
        if isinstance(current, int) and isinstance(value, float) and value.is_integer():
            return int(value)
    return value


def apply_overrides(config, pairs, algo_name: str):
    """Sets AlgorithmConfig keys from (path, value) pairs, refusing keys the config does not have."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    for path, value in pairs:
        key = ".".join(path)
        root, rest = path[0], path[1:]
        if root == "model_config":  # a read-only merged view; the user's part lives in rl_module()
            user_part = config._model_config
            user_part = dict(user_part) if isinstance(user_part, dict) else dataclasses.asdict(user_part)
            if rest:
                known = {f.name for f in dataclasses.fields(DefaultModelConfig)} | set(config.model_config)
                if len(rest) == 1 and rest[0] not in known:
                    close = difflib.get_close_matches(rest[0], sorted(known), n=3)
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    raise UserError(f"{algo_name} has no config key {key!r}{hint}")
                _set_nested(user_part, rest, value, key)
            elif isinstance(value, dict):
                user_part.update(value)
            else:
                raise UserError(f"bad value for model_config: expected a dict, got {value!r}")
            config.rl_module(model_config=user_part)
            continue
        if root.startswith("_") or root not in _known_keys(config):
            close = difflib.get_close_matches(root, _known_keys(config), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"{algo_name} has no config key {root!r}{hint}")
        current = getattr(config, root)
        if rest:
            if not isinstance(current, dict):
                raise UserError(f"cannot set {key}: {root} is not a dict (it is {current!r})")
            tree = copy.deepcopy(current)
            _set_nested(tree, rest, value, key)
            value = tree
        else:
            value = _check_type(key, current, value, algo_name)
        try:
            config.update_from_dict({root: value})
        except Exception as e:  # noqa: BLE001 -- read-only properties, deprecated keys
            raise UserError(f"cannot set {key}: {e}") from None


def build_config(spec):  # noqa: C901 -- one step per part of the spec, in the order RLlib's config takes them
    """The spec's settings, the tuned defaults, then the user's --set, in that order of precedence."""
    config = algorithm_class(spec.training.algo).get_default_config()
    config.environment(spec.env.source.name, env_config=dict(spec.env.config))
    connector = observation_connector(spec, use_action_masks(config, spec))
    if spec.env.normalize_observations:  # --normalize-obs (rlhpc.run.spec.normalize_observations)
        connector = functools.partial(normalized_observations, flatten=connector,
                                      multi_agent=bool(spec.env.agent_policy))
    if connector:
        config.env_runners(env_to_module_connector=connector)
    if spec.env.agent_policy:  # a multi-agent env: its policies, and which agent plays with which
        from rlhpc.envs.multi_agent import AgentToPolicy

        config.multi_agent(policies=set(spec.env.policies),
                           policy_mapping_fn=AgentToPolicy(tuple(sorted(spec.env.agent_policy.items()))))
    if spec.training.legacy_stack:
        # RLlib's TensorFlow support exists only on the legacy API stack, whose episode_reward_mean
        # is already a 100-episode mean.
        config.api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
        config.framework("tf2")
    else:
        from rlhpc.algo.metrics import ReturnOverLast100Episodes

        config.callbacks(ReturnOverLast100Episodes)

    defaults = tuned_defaults(spec.training.algo, spec.env.source.label, spec.env.family)
    apply_overrides(config, [([k], v) for k, v in defaults.items()], spec.training.algo)

    runner_kwargs = {"num_env_runners": spec.placement.num_env_runners,
                     "num_envs_per_env_runner": spec.placement.num_envs_per_runner,
                     "gym_env_vectorize_mode": spec.placement.vectorize}
    if spec.placement.runner_resource:
        # A sliver of a custom resource pins runners to the nodes that advertise it (Slurm group 1).
        runner_kwargs["custom_resources_per_env_runner"] = {spec.placement.runner_resource: 0.01}
    config.env_runners(**runner_kwargs)
    if spec.placement.train_batch_size:
        config.training(train_batch_size_per_learner=spec.placement.train_batch_size)
    # A node lost mid-run (pre-emption, OOM) must cost a few samples, not the whole job.
    config.fault_tolerance(restart_failed_env_runners=True)

    if spec.training.legacy_stack:  # the legacy stack has no learner actors, only num_gpus
        config.resources(num_gpus=spec.placement.num_gpus_per_learner)
    else:
        learners = {"num_learners": spec.placement.num_learners,
                    "num_gpus_per_learner": spec.placement.num_gpus_per_learner}
        if spec.placement.learner_resource:
            learners["custom_resources_per_learner"] = {spec.placement.learner_resource: 0.01}
        config.learners(**learners)
    # Greedy episodes on RLlib's evaluation env runner (rlhpc.algo.metrics keeps the best).
    if spec.training.eval_interval:
        config.evaluation(evaluation_interval=spec.training.eval_interval,
                          evaluation_duration=spec.training.eval_episodes,
                          evaluation_duration_unit="episodes", evaluation_config={"explore": False})
    if spec.training.seed is not None:
        config.debugging(seed=spec.training.seed)
    config.env_runners(sample_timeout_s=sample_timeout(config, spec))
    apply_overrides(config, [(list(path), value) for path, value in spec.training.overrides], spec.training.algo)
    until = spec.training.anneal_lr_until
    if until and isinstance(config.lr, int | float):  # --anneal-lr; a schedule given with --set lr=[...] stays
        # RLlib's learner interpolates [[step, lr], ...] by the env steps sampled so far, this run's stop criterion
        config.training(lr=[[0, config.lr], [until, 0.0]])
    if spec.training.scale_rewards:  # --scale-rewards: the learner's connector scales them (rlhpc.algo.reward_scaling)
        from rlhpc.algo.reward_scaling import RewardScalingPPOLearner

        config.learners(learner_class=RewardScalingPPOLearner)
    for path, _, values in spec.search.space:  # every candidate must be a value the config accepts
        for value in values:
            apply_overrides(copy.deepcopy(config), [(list(path), value)], spec.training.algo)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config.validate()
    except Exception as e:  # noqa: BLE001 -- RLlib's validation raises several types; all are the user's to fix
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"invalid {spec.training.algo} config: {first_line}") from None
    return config


def sample_timeout(config, spec) -> float:
    """RLlib drops what an env runner has not sampled within `sample_timeout_s` (60 s by default): a healthy but
    slow simulator trained on nothing (Grid2Op's 29 ms steps, 1,000-step fragments). The limit here is three times
    a runner's share of the batch at the step time measured on the driver (plus RLlib's ~1 ms a step), and one
    env timeout more, since a hung step is given up only after that (rlhpc.envs.guard)."""
    step_s = spec.env.probe.step_seconds or 0.0
    per_runner = (config.train_batch_size_per_learner or config.train_batch_size or 0) / max(1, config.num_env_runners)
    return max(DEFAULT_SAMPLE_TIMEOUT_S, 3 * per_runner * (step_s + 0.001)) + spec.env.step_timeout_s


def resource_request(algo_cls, config) -> list:
    """The placement-group bundles Tune will ask Ray for (one per process)."""
    pgf = algo_cls.default_resource_request(config)
    bundles = getattr(pgf, "bundles", None)
    if bundles is None:  # a plain Resources object on some code paths
        bundles = [{"CPU": pgf.cpu, "GPU": pgf.gpu}]
    return [{k: v for k, v in b.items() if v} for b in bundles]


def total_resources(bundles: list) -> dict:
    """[{'CPU': 1}, {'CPU': 1, 'GPU': 1}] -> {'CPU': 2, 'GPU': 1}"""
    total: dict = {}
    for bundle in bundles:
        for res, amount in bundle.items():
            total[res] = total.get(res, 0) + amount
    return total


def describe(config, spec, bundles: list) -> dict:
    """What --print-config shows: the decisions that matter before a long job, the run spec, then the rest."""
    total = total_resources(bundles)
    legacy = spec.training.legacy_stack
    summary = {
        "algorithm": spec.training.algo,
        "framework": config.framework_str,
        "api_stack": "legacy" if legacy else "new",
        "env": spec.env.source.name,
        "env_config": dict(config.env_config),
        "num_env_runners": config.num_env_runners,
        "num_envs_per_env_runner": config.num_envs_per_env_runner,
        "vectorize": f"{config.gym_env_vectorize_mode} ({spec.placement.vectorize_reason})",
        "policies": {"agent_policy": dict(spec.env.agent_policy), "why": spec.env.policies_reason}
        if spec.env.agent_policy else None,
        "train_batch_size_per_learner": config.train_batch_size_per_learner,
        "rollout_fragment_length": config.get_rollout_fragment_length(),
        "sample_timeout_s": config.sample_timeout_s,
        "env_timeout_s": f"{spec.env.step_timeout_s:g} ({spec.env.timeout_reason})",
        "num_learners": 0 if legacy else config.num_learners,
        "num_gpus_per_learner": config.num_gpus if legacy else config.num_gpus_per_learner,
        "learner_placement": _learner_placement(config, legacy),
        "resources": total,
        "bundles": bundles,
        "stop": dict(spec.stop.criteria),
        "seed": config.seed,
        # before --set; from rlhpc/run/defaults.py, for this kind of env
        "family": f"{spec.env.family} ({spec.env.family_reason})",
        "tuned_defaults": tuned_defaults(spec.training.algo, spec.env.source.label, spec.env.family),
        "env_entry": sorted(env_entry(spec.training.algo, spec.env.source.label)),  # of those, what the env's own sets
        "normalize_observations": f"{'on' if spec.env.normalize_observations else 'off'} "
                                  f"({spec.env.normalize_reason})",
        "anneal_lr": f"{spec.training.lr_schedule} ({spec.training.anneal_lr_reason})",
        "scale_rewards": f"{'on' if spec.training.scale_rewards else 'off'} ({spec.training.scale_rewards_reason})",
    }
    full = {}
    for key, value in sorted(config.to_dict().items()):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        full[key] = value
    return {"summary": summary, "spec": spec.record(), "config": full}


def _learner_placement(config, legacy: bool) -> str:
    if legacy:
        return f"driver process, {config.num_gpus} GPU(s)"
    if config.num_learners == 0:
        where = f"{config.num_gpus_per_learner} GPU" if config.num_gpus_per_learner else "CPU"
        return f"local learner in the algorithm process on {where}"
    where = f"{config.num_gpus_per_learner} GPU each" if config.num_gpus_per_learner else "CPU"
    return f"{config.num_learners} remote learner(s), {where}"
