"""What every trainer script does, in the tutorial's order: flags, spec, env, config, Ray, backend, report."""

import json
import os
import sys
import time
import types

from rlhpc.errors import UserError, fail
from rlhpc.run import job_status
from rlhpc.run.cli import build_parser


def main(argv=None, *, description: str, num_gpus: float = 0.0, name_env: str = "CartPole-v0",
         envs=None, stop_reward_for=None, prog: str | None = None) -> int:
    """Parses the command line and trains; bad input ends as one line on stderr, exit code 2.

    envs: {name: env class or creator} a script offers for --name-env (custom envs); the chosen one is
    shipped to every node. stop_reward_for(env_name, env_config) -> float | None gives a default stop
    reward for envs without a Gymnasium spec. prog: the name in --help and errors (default: the script's).
    """
    def make_parser():
        return build_parser(description, num_gpus=num_gpus, name_env=name_env, prog=prog)

    from rlhpc.run import config_file

    parser = make_parser()
    try:  # an experiment file's settings become flags before the command line's (rlhpc/run/config_file.py)
        flags, from_file = config_file.expand(list(sys.argv[1:] if argv is None else argv), parser)
    except UserError as e:
        fail(str(e))
    args = parser.parse_args(flags)
    try:
        return train(args, envs=envs, stop_reward_for=stop_reward_for, flags=flags, make_parser=make_parser,
                     from_file=from_file)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted before training started", code=130)


def quiet_known_noise() -> None:
    """Keep the console to our progress lines: these warnings say nothing a user can act on."""
    # Tune's console output (tables, a TensorBoard hint pointing into /tmp) off: ProgressLine prints.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from rlhpc.algo.quiet import quiet_rllib_noise

    quiet_rllib_noise()  # the same filters in RLlib's other processes: rlhpc.algo.metrics installs them there


def train(args, *, envs=None, stop_reward_for=None, flags=(), make_parser=None, from_file=None) -> int:
    """flags: the command line args came from; make_parser: its parser, for --resume to read the run's own;
    from_file: the experiment file those flags include (rlhpc.run.config_file), recorded with the run."""
    started = time.time()
    from rlhpc.train.cluster import prepare_auth

    prepare_auth(args)  # first: Ray reads RAY_AUTH_* once, when it is imported
    from rlhpc.train.stop_signal import StopSignal

    # The run's one stop signal, handed to the backend: a wall-time signal while Ray starts still ends in a checkpoint.
    stop_signal = StopSignal()
    stop_signal.catch()
    if args.framework == "tf2":
        from rlhpc.algo.tf_support import prepare_tensorflow

        prepare_tensorflow()  # before RLlib imports TensorFlow
    quiet_known_noise()

    from rlhpc.algo import config as configs
    from rlhpc.envs import sources as env_sources
    from rlhpc.outputs import report
    from rlhpc.run import experiment
    from rlhpc.run.spec import INPROCESS, resolve

    changes = []
    if args.resume and make_parser:  # the run's own flags, with what this command line changes
        from rlhpc.run import resume

        # The default name (the env's) is only needed to find a run by name; resolve() finds the env anyway.
        by_name = not isinstance(args.resume, str) and not args.name
        default_name = experiment.path_safe(env_sources.find(args.name_env, envs, ray_registry=True)[0].label) \
            if by_name else args.name
        args, changes = resume.settings(args, flags, make_parser, default_name)
    spec = resolve(args, envs=envs, stop_reward_for=stop_reward_for, flags=flags, from_file=from_file,
                   changes=changes)
    env_sources.register_with_ray(spec.env.source, spec.env.probe, spec.env.step_timeout_s,
                                  spec.placement.num_envs_per_runner, guard=not spec.training.legacy_stack)
    config = configs.build_config(spec)
    bundles = configs.resource_request(configs.algorithm_class(spec.training.algo), config)
    if spec.print_config and not spec.output.resume_dir:  # the dir the run would claim (<name>_2 when <name> holds
        spec = spec.with_experiment_dir(*experiment.dir_to_claim(spec.output.storage_path, spec.output.name))  # a run)
    description = configs.describe(config, spec, bundles)
    if spec.print_config:
        print(json.dumps(description, indent=2, default=repr))
        return 0

    from rlhpc.train.cluster import check_cuda, check_resources, connect

    experiment.check_writable(spec.output.storage_path)
    backend: types.ModuleType  # either backend module: train(spec, config, stop_signal) -> Outcome
    if spec.backend == INPROCESS:
        from rlhpc.train import inprocess as backend

        if spec.output.resume_dir and backend.finished(spec):
            write_status(spec, job_status.DONE)
            return 0
        backend.warm_up()
    else:
        from rlhpc.train import tune_run as backend
    where = connect(spec)
    stop_signal.catch()  # again: ray.init makes SIGTERM exit at once
    check_resources(bundles, spec)
    check_cuda(spec)
    if spec.output.resume_dir:  # the record keeps how the run started; each resume adds an entry
        resumed_at = resume_point(spec)
        experiment.record_resume(spec.output.resume_dir, resumed_at, spec.flags, spec.output.changes)
        report.resume_line(spec, resumed_at)
    else:  # its own experiment dir, whatever else starts beside it with this --name
        name, path = experiment.claim(spec.output.storage_path, spec.output.name)
        if name != spec.output.name:
            print(f"results in {path}: {spec.output.name} holds another run", flush=True)
        asked, spec = spec.output.name, spec.with_experiment_dir(name, path)
        experiment.record_run(spec.record(), spec.output.experiment_dir, name_asked=asked)
    report.start_lines(spec, where, description["summary"])
    write_status(spec, job_status.RUNNING)
    outcome = backend.train(spec, config, stop_signal)
    from rlhpc.envs import identity

    identity.cleanup()  # the env copies' scratch folders of runners that have ended (this process's: at exit)
    exit_code = report.finish(outcome, spec, started)
    write_status(spec, report.ending(outcome, spec))
    return exit_code


def resume_point(spec) -> int:
    """The iteration a resume goes on from: its last checkpoint's (the rows after it are dropped,
    rlhpc.train.trial_files), 0 when it has none: it starts over. A Tune run: its last row."""
    from rlhpc.run import experiment
    from rlhpc.run.spec import INPROCESS

    if spec.backend != INPROCESS:
        return experiment.last_iteration(spec.output.resume_dir)
    from rlhpc.train.inprocess import resumed_from

    _, last = resumed_from(spec.output.resume_dir)
    return last["training_iteration"] if last else 0


def write_status(spec, ending: str) -> None:
    """For the job running the trainer (RLHPC_STATUS_FILE, set by slurm/ray_cluster.sh): which run, how it
    ended (RUNNING until it does), how far it got. rlhpc.slurm.job requeues a job whose run was STOPPED."""
    path = os.environ.get("RLHPC_STATUS_FILE")
    if not path:
        return
    from rlhpc.run import experiment

    run_dir = spec.output.resume_dir or spec.output.experiment_dir
    status = job_status.Status(experiment=run_dir, ending=ending, iteration=experiment.last_iteration(run_dir))
    experiment.write_json(path, status.as_json())
