"""What every trainer script does, in the tutorial's order: flags, spec, env, config, Ray, backend, report."""

import json
import logging
import os
import time
import warnings

from rlhpc.cli import build_parser
from rlhpc.errors import UserError, fail


def main(argv=None, *, description: str, num_gpus: float = 0.0, name_env: str = "CartPole-v0",
         envs=None, stop_reward_for=None) -> int:
    """Parses the command line and trains; bad input ends as one line on stderr, exit code 2.

    envs: {name: env class or creator} a script offers for --name-env (custom envs); the chosen one is
    shipped to every node. stop_reward_for(env_name, env_config) -> float | None gives a default stop
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


def train(args, *, envs=None, stop_reward_for=None) -> int:
    started = time.time()
    from rlhpc.cluster import prepare_auth

    prepare_auth(args)  # first: Ray reads RAY_AUTH_* once, when it is imported
    if args.framework == "tf2":
        from rlhpc.tf_support import prepare_tensorflow

        prepare_tensorflow()  # before RLlib imports TensorFlow
    quiet_known_noise()

    from rlhpc import config as configs
    from rlhpc import envs as env_sources
    from rlhpc import experiment, report
    from rlhpc.spec import INPROCESS, resolve

    spec = resolve(args, envs=envs, stop_reward_for=stop_reward_for)
    env_sources.register_with_ray(spec.env, spec.probe)
    config = configs.build_config(spec)
    bundles = configs.resource_request(configs.algorithm_class(spec.algo), config)
    description = configs.describe(config, spec, bundles)
    if spec.print_config:
        print(json.dumps(description, indent=2, default=repr))
        return 0

    from rlhpc.cluster import check_cuda, check_resources, connect

    experiment.check_writable(spec.storage_path)
    if spec.backend == INPROCESS:
        from rlhpc import inprocess as backend

        backend.warm_up()
    else:
        from rlhpc import tune_run as backend
    where = connect(spec)
    check_resources(bundles, spec)
    check_cuda(spec)
    report.start_lines(spec, where, description["summary"])
    if not spec.resume_dir:  # a resumed run keeps the record of how it started
        experiment.record_run(spec.record(), spec.experiment_dir)
    outcome = backend.train(spec, config)
    return report.finish(outcome, spec, started)
