"""From command-line flags to an RLlib AlgorithmConfig, checking everything a user can get wrong.

Checks happen here, before Ray starts, so a typo costs a second, not a queue wait.
"""

import ast
import copy
import dataclasses
import difflib
import importlib
import json
import re
import warnings

from rlhpc.defaults import tuned_defaults
from rlhpc.errors import UserError, warn

# The tutorial trained A2C; RLlib dropped it (and A3C) in Ray 2.x.
REMOVED_ALGORITHMS = {
    "A2C": "A2C was removed from RLlib (Ray 2.x); use PPO, its synchronous successor (--run PPO)",
    "A3C": "A3C was removed from RLlib (Ray 2.x); use APPO or IMPALA, the asynchronous replacements (--run APPO)",
}
# These learn from recorded data (config key input_), not by acting in an env.
OFFLINE_ALGORITHMS = {"BC", "CQL", "IQL", "MARWIL"}

# The mean return of the last 100 episodes (rlhpc.metrics); RLlib's own episode_return_mean
# averages one iteration's episodes only.
RETURN_METRIC = "env_runners/episode_return_mean_100"
LEGACY_RETURN_METRIC = "env_runners/episode_reward_mean"  # the legacy stack's name (tf2)


def path_safe(name: str) -> str:
    """An env name as one directory name: "ale_py:ALE/Pong-v5" -> "ale_py-ALE-Pong-v5"."""
    return re.sub(r"[^\w.-]+", "-", name)


def cannot_create_env(name: str, error: Exception) -> UserError:
    """The env's own failure to build (a missing extra, a bug in a custom env) as one line."""
    return UserError(f"cannot create env {name!r}: {type(error).__name__}: {error}")


def parse_value(text: str):
    """`1e-3` -> 0.001, `[64,64]` -> list, `true`/`True` -> True, anything else stays a string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def parse_assignments(items, flag: str):
    """['a.b=1', ...] -> [(['a', 'b'], 1), ...]; anything without KEY=VALUE is an error."""
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(part.strip() for part in path) or not text.strip():
            raise UserError(f"malformed {flag} {item!r}: expected KEY=VALUE, e.g. {flag} lr=1e-3")
        pairs.append(([part.strip() for part in path], parse_value(text.strip())))
    return pairs


def env_config_from(args) -> dict:
    """--env-config length=20 --env-config slip=0.1 -> {'length': 20, 'slip': 0.1}"""
    return {".".join(path): value for path, value in parse_assignments(args.env_config, "--env-config")}


def resolve_algorithm(name: str):
    """'ppo' -> ('PPO', PPO class); unknown or removed names are one clear line."""
    from ray.rllib.algorithms.registry import ALGORITHMS, _get_algorithm_class

    if name.upper() in REMOVED_ALGORITHMS:
        raise UserError(REMOVED_ALGORITHMS[name.upper()])
    by_lower = {known.lower(): known for known in ALGORITHMS}
    canonical = by_lower.get(name.lower())
    if canonical is None:
        raise UserError(f"unknown algorithm {name!r}; RLlib 2.60 has: {', '.join(sorted(ALGORITHMS))}")
    return canonical, _get_algorithm_class(canonical)


def resolve_env(name: str, env_config: dict | None = None):
    """Builds the env once here, so a typo or bad --env-config fails now and not on a remote node.

    Returns (Gymnasium spec or None for register_env names, observation space).
    """
    from ray.tune.registry import ENV_CREATOR, _global_registry

    env_config = env_config or {}
    if _global_registry.contains(ENV_CREATOR, name):
        from ray.rllib.env.env_context import EnvContext

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env = _global_registry.get(ENV_CREATOR, name)(EnvContext(env_config, worker_index=0))
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"bad --env-config for {name}: {e}") from None
        except Exception as e:  # noqa: BLE001 -- the env's own bug: one line here, not a traceback
            raise cannot_create_env(name, e) from None
        space = getattr(env, "observation_space", None)
        if hasattr(env, "close"):
            env.close()
        return None, space
    import gymnasium

    module, _, env_id = name.rpartition(":")
    if module:  # Gymnasium's "my_package.envs:MyEnv-v0": importing the module registers the env
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(f"cannot import {module!r} for env {name!r}: {e} (is it on PYTHONPATH?)") from None
    try:
        spec = gymnasium.spec(env_id)
    except gymnasium.error.Error as e:
        raise UserError(f"unknown env {name!r}: {e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gymnasium.make(name, **env_config)
            space = env.observation_space
            env.close()
    except TypeError as e:  # an unknown keyword from --env-config
        raise UserError(f"bad --env-config for {name}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- a missing extra (box2d, mujoco, ale) is the usual cause
        raise cannot_create_env(name, e) from None
    return spec, space


def flatten_observations(env=None, spaces=None, device=None):
    """RLlib's default networks take Box observations only; this one-hots Discrete ones."""
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations()


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


def _check_type(key: str, current, value):
    """Catch `--set lr=abc` here rather than as a TypeError deep inside a learner."""
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
            value = _check_type(key, current, value)
        try:
            config.update_from_dict({root: value})
        except Exception as e:  # noqa: BLE001 -- read-only properties, deprecated keys
            raise UserError(f"cannot set {key}: {e}") from None


def build_config(args, algo_name: str, algo_cls, env_config: dict, observation_space=None):
    """The tutorial's flags, the tuned defaults, then the user's --set, in that order of precedence."""
    import gymnasium

    config = algo_cls.get_default_config()
    config.environment(args.name_env, env_config=env_config)
    if args.framework != "tf2" and observation_space is not None and not isinstance(
            observation_space, gymnasium.spaces.Box):
        config.env_runners(env_to_module_connector=flatten_observations)
    if args.framework == "tf2":
        # RLlib's TensorFlow support exists only on the legacy API stack, whose episode_reward_mean
        # is already a 100-episode mean.
        config.api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
        config.framework("tf2")
    else:
        from rlhpc.metrics import ReturnOverLast100Episodes

        config.callbacks(ReturnOverLast100Episodes)

    defaults = tuned_defaults(algo_name, args.name_env)
    apply_overrides(config, [([k], v) for k, v in defaults.items()], algo_name)

    num_runners = args.num_cpus
    if args.local_mode and num_runners:
        warn(f"--local-mode samples in the driver on one core: ignoring --num-cpus {num_runners}")
        num_runners = 0
    runner_kwargs = {"num_env_runners": num_runners}
    if args.num_envs_per_runner:
        runner_kwargs["num_envs_per_env_runner"] = args.num_envs_per_runner
    if args.runner_resource:
        # A sliver of a custom resource pins runners to the nodes that advertise it (Slurm group 1).
        runner_kwargs["custom_resources_per_env_runner"] = {args.runner_resource: 0.01}
    config.env_runners(**runner_kwargs)
    # A node lost mid-run (pre-emption, OOM) must cost a few samples, not the whole job.
    config.fault_tolerance(restart_failed_env_runners=True)

    _place_learners(config, args)
    if args.seed is not None:
        config.debugging(seed=args.seed)
    apply_overrides(config, parse_assignments(args.set, "--set"), algo_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config.validate()
    except Exception as e:  # noqa: BLE001 -- RLlib's validation raises several types; all are the user's to fix
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"invalid {algo_name} config: {first_line}") from None
    return config


def _place_learners(config, args):
    """GPUs -> learners as in RLlib's scaling guide.

    <=1 GPU: the one (local) learner runs in the algorithm's process on that GPU (share);
    G>1: G remote learners with one GPU each. A learner pinned to a node by a custom
    resource must be a remote actor, since only remote learners get their own placement.
    """
    gpus = 0.0 if args.local_mode else args.num_gpus
    if args.framework == "tf2":  # the legacy stack has no learner actors, only num_gpus
        config.resources(num_gpus=gpus)
        return
    if gpus > 1:
        learners, per_learner = int(gpus), 1
    else:
        learners, per_learner = 0, gpus
    kwargs = {"num_learners": learners, "num_gpus_per_learner": per_learner}
    if args.learner_resource:
        kwargs["num_learners"] = max(1, learners)
        kwargs["custom_resources_per_learner"] = {args.learner_resource: 0.01}
    config.learners(**kwargs)


def resource_request(algo_cls, config) -> list:
    """The placement-group bundles Tune will ask Ray for (one per process)."""
    pgf = algo_cls.default_resource_request(config)
    bundles = getattr(pgf, "bundles", None)
    if bundles is None:  # a plain Resources object on some code paths
        bundles = [{"CPU": pgf.cpu, "GPU": pgf.gpu}]
    return [{k: v for k, v in b.items() if v} for b in bundles]


def total_resources(bundles: list) -> dict:
    """[{'CPU': 1}, {'CPU': 1, 'GPU': 1}] -> {'CPU': 2, 'GPU': 1}"""
    total = {}
    for bundle in bundles:
        for res, amount in bundle.items():
            total[res] = total.get(res, 0) + amount
    return total


def describe(config, algo_name: str, args, stop: dict, bundles: list) -> dict:
    """What --print-config shows: the decisions that matter before a long job, then the rest."""
    total = total_resources(bundles)
    legacy = args.framework == "tf2"
    summary = {
        "algorithm": algo_name,
        "framework": config.framework_str,
        "api_stack": "legacy" if legacy else "new",
        "env": args.name_env,
        "env_config": dict(config.env_config),
        "num_env_runners": config.num_env_runners,
        "num_envs_per_env_runner": config.num_envs_per_env_runner,
        "num_learners": 0 if legacy else config.num_learners,
        "num_gpus_per_learner": config.num_gpus if legacy else config.num_gpus_per_learner,
        "learner_placement": _learner_placement(config, legacy),
        "resources": total,
        "bundles": bundles,
        "stop": stop,
        "seed": config.seed,
        "tuned_defaults": tuned_defaults(algo_name, args.name_env),  # before --set; from rlhpc/defaults.py
    }
    full = {}
    for key, value in sorted(config.to_dict().items()):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        full[key] = value
    return {"summary": summary, "config": full}


def _learner_placement(config, legacy: bool) -> str:
    if legacy:
        return f"driver process, {config.num_gpus} GPU(s)"
    if config.num_learners == 0:
        where = f"{config.num_gpus_per_learner} GPU" if config.num_gpus_per_learner else "CPU"
        return f"local learner in the algorithm process on {where}"
    where = f"{config.num_gpus_per_learner} GPU each" if config.num_gpus_per_learner else "CPU"
    return f"{config.num_learners} remote learner(s), {where}"
