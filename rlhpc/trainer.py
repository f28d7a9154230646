"""What every trainer script does, in the tutorial's order: flags, checks, Ray, Tune, summary."""

import json
import logging
import os
import sys
import time
import warnings

from rlhpc.cli import build_parser
from rlhpc.config import (
    LEGACY_RETURN_METRIC,
    OFFLINE_ALGORITHMS,
    RETURN_METRIC,
    build_config,
    describe,
    env_config_from,
    path_safe,
    resolve_algorithm,
    resolve_env,
    resource_request,
)
from rlhpc.errors import UserError, fail, warn


def main(argv=None, *, description: str, num_gpus: float = 0.0, name_env: str = "CartPole-v0",
         envs=None, stop_reward_for=None) -> int:
    """Parses the command line and trains; bad input ends as one line on stderr, exit code 2.

    envs: {name: env class or creator} to register with Ray (custom envs); they are shipped to
    every node. stop_reward_for(env_name, env_config) -> float | None gives a default stop
    reward for envs without a Gymnasium spec.
    """
    args = build_parser(description, num_gpus=num_gpus, name_env=name_env).parse_args(argv)
    try:
        return train(args, envs=envs, stop_reward_for=stop_reward_for)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted before training started", code=130)


def quiet_known_noise() -> None:
    """Keep the console to our progress lines: these warnings say nothing a user can act on."""
    # Tune's console output (tables, a TensorBoard hint pointing into /tmp) off: ProgressLine prints.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module="gymnasium.spaces.box")

    class Drop(logging.Filter):
        def __init__(self, text):
            super().__init__()
            self.text = text

        def filter(self, record):
            return self.text not in record.getMessage()

    logging.getLogger("ray.rllib.algorithms.algorithm_config").addFilter(Drop("on the new API stack"))
    # RLlib's own modules use a class it deprecated; shown in the driver since one local trial trains here.
    logging.getLogger("ray._common.deprecation").addFilter(Drop("RLModule(config="))
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)  # "Install gputil for GPU monitoring"
    # A local Ray says it turned token auth on; true, and nothing to do about it.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def stop_criteria(args, default_reward) -> dict:
    reward = args.stop_reward if args.stop_reward is not None else default_reward
    stop = {}
    if reward is not None:
        stop[LEGACY_RETURN_METRIC if args.framework == "tf2" else RETURN_METRIC] = reward
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


def train(args, *, envs=None, stop_reward_for=None) -> int:
    started = time.time()
    from rlhpc.cluster import prepare_auth

    prepare_auth(args)  # first: Ray reads RAY_AUTH_* once, when it is imported
    quiet_known_noise()
    if envs:
        from rlhpc.custom_envs import register_envs

        register_envs(envs, args)
    algo_name, algo_cls = resolve_algorithm(args.run)
    if algo_name in OFFLINE_ALGORITHMS and not any(s.startswith("input_=") for s in args.set):
        raise UserError(f"{algo_name} learns from recorded data, not from an env: give it --set input_=PATH "
                        "or pick an online algorithm (PPO, DQN, SAC, APPO, IMPALA)")
    if args.framework == "tf2":
        from rlhpc.tf_support import prepare_tensorflow

        prepare_tensorflow()
    env_config = env_config_from(args)
    spec, observation_space = resolve_env(args.name_env, env_config)
    args.name = args.name or path_safe(args.name_env)
    config = build_config(args, algo_name, algo_cls, env_config, observation_space)
    default_reward = spec.reward_threshold if spec else (stop_reward_for(args.name_env, env_config)
                                                         if stop_reward_for else None)
    stop = stop_criteria(args, default_reward)
    bundles = resource_request(algo_cls, config)
    from rlhpc.search import METRICS, parse_search, search_space

    search = parse_search(args)
    param_space = search_space(config, algo_name, search) if search else config
    args.mode = args.mode or METRICS.get(args.metric, (None, "max"))[1]
    if args.print_config:
        print(json.dumps(describe(config, algo_name, args, stop, bundles), indent=2, default=repr))
        return 0

    from rlhpc import inprocess
    from rlhpc.cluster import check_cuda, check_resources, connect
    from rlhpc.run import check_writable, experiment_dir, make_tuner, resume_dir, summarize

    check_writable(os.path.expanduser(args.storage_path))
    resuming = resume_dir(args) if args.resume else None
    in_process = inprocess.has_state(resuming) if resuming else inprocess.wanted(args, search)
    if in_process and args.address:
        raise UserError(f"{resuming} was trained by a local run in its own process: resume it without an address")
    if in_process:
        inprocess.warm_up()
    where = connect(args)
    check_resources(bundles, args)
    check_cuda(args)
    placement = describe(config, algo_name, args, stop, bundles)["summary"]
    print(f"{algo_name} on {args.name_env} with {where}: {placement['num_env_runners']} env runner(s) x "
          f"{placement['num_envs_per_env_runner']} envs, learner: {placement['learner_placement']}", flush=True)
    print("stop when: " + ", ".join(f"{k} >= {v:g}" for k, v in stop.items()), flush=True)
    if in_process:  # one local trial: no Tune actor to start (see rlhpc/inprocess.py)
        return inprocess.train(args, algo_name, algo_cls, config, stop, started, resuming or experiment_dir(args))
    tuner = make_tuner(args, algo_cls, param_space, stop, num_samples=args.num_samples)
    grid = tuner.fit()
    code = summarize(grid, stop, args, started, search)
    sys.stdout.flush()
    return code
