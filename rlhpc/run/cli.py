"""The trainers' command line: the tutorial's flags, with their old meaning, plus today's, and their values.

Every trainer script builds its parser here, so a flag means the same thing everywhere; the KEY=VALUE
flags (--set, --env-config, --grid) are parsed here too. What the flags mean together is rlhpc.run.spec's job.
"""

import argparse
import ast
import json
import math
import os
import sys

from rlhpc.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on a bad flag; a researcher needs one line."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(2)


def whole_number(text: str) -> int:
    """'100000', '1e5' or '1_000_000' -> an int: step counts are written all three ways; '1.5' is an error."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not number.is_integer():  # NaN and infinity included
            raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
        value = int(number)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def positive_number(text: str) -> int:
    value = whole_number(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative(text: str, what: str) -> float:
    """A finite number >= 0, or argparse's error naming `what` it should be."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected {what} >= 0, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    return non_negative(text, "seconds")


def gpu_count(text: str) -> float:
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU count like 0, 0.5, 1 or 2, got {text!r}") from None
    value = non_negative(text, "a GPU count")
    if value > 1 and value != int(value):
        raise argparse.ArgumentTypeError(
            f"more than one GPU must be a whole number (one learner per GPU), got {text!r}"
        )
    return value


def seed_list(text: str) -> list:
    """--seeds 3 -> [0, 1, 2]; --seeds 7,8 -> [7, 8]."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or seeds like 0,1,2, got {text!r}") from None
    if len(values) == 1:
        if values[0] < 2:
            raise argparse.ArgumentTypeError(f"give at least 2 seeds, got {text!r} (one seed: --seed)")
        return list(range(values[0]))
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a seed given twice in {text!r}")
    return values


def parse_value(text: str):
    """`1e-3` -> 0.001, `[64,64]` -> list, `true`/`True` -> True, anything else stays a string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def parse_assignments(items, flag: str) -> list:
    """['a.b=1', ...] -> [(['a', 'b'], 1), ...]; anything without KEY=VALUE is an error."""
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(part.strip() for part in path) or not text.strip():
            raise UserError(f"malformed {flag} {item!r}: expected KEY=VALUE, e.g. {flag} lr=1e-3")
        pairs.append(([part.strip() for part in path], parse_value(text.strip())))
    return pairs


def env_config_from(items) -> dict:
    """--env-config length=20 --env-config slip=0.1 -> {'length': 20, 'slip': 0.1}"""
    return {".".join(path): value for path, value in parse_assignments(items, "--env-config")}


def build_parser(description: str, *, num_gpus: float = 0.0, name_env: str = "CartPole-v0",
                 prog: str | None = None) -> argparse.ArgumentParser:
    """The shared parser; scripts change only the defaults that make them what they are. The groups are added in
    the order --help lists them (and the usage line lists their flags)."""
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_tutorial_flags(parser, num_gpus=num_gpus, name_env=name_env)
    add_cluster_flags(parser)
    add_stop_flags(parser)
    add_evaluation_flags(parser)
    add_algorithm_flags(parser)
    add_search_flags(parser)
    results = add_result_flags(parser)
    add_tracking_flags(parser)
    add_resume_flags(results)  # in the results group, after tracking's flags: as --help has always listed them
    return parser


def add_tutorial_flags(parser: argparse.ArgumentParser, *, num_gpus: float, name_env: str) -> None:
    """The tutorial's flags, and the names RLlib users type for them."""
    tutorial = parser.add_argument_group("the tutorial's flags")
    tutorial.add_argument("--num-cpus", type=whole_number, default=0,
                          help="env runners (rollout workers); 0 samples in the driver process "
                               "(also --num-env-runners)")
    tutorial.add_argument("--num-gpus", type=gpu_count, default=num_gpus,
                          help="GPUs for learning: <=1 puts the learner on that (share of a) GPU, "
                               "G>1 runs G learners with one GPU each")
    tutorial.add_argument("--name-env", default=name_env,
                          help="a Gymnasium id (e.g. CartPole-v1), module:EnvId, path/to/file.py:Class, "
                               "module:Class, or a name given to register_env (also --env)")
    tutorial.add_argument("--run", default="PPO", help="RLlib algorithm: PPO, DQN, SAC, APPO, IMPALA, ... "
                                                       "(also --algo)")
    # What RLlib users type, for the same settings; hidden so that --help and error lines use the
    # tutorial's names.
    for alias, dest, kind in (("--num-env-runners", "num_cpus", whole_number), ("--env", "name_env", str),
                              ("--algo", "run", str)):
        tutorial.add_argument(alias, dest=dest, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    tutorial.add_argument("--local-mode", action="store_true",
                          help="run everything in one process on one core (for debugging)")
    tutorial.add_argument("--redis-password", metavar="TOKEN",
                          help="connect to a running cluster with this auth token (visible to other users "
                               "in `ps`: prefer RAY_AUTH_TOKEN_PATH=<mode-600 file>)")


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """Where the run trains: the Ray cluster, pinned resources, restarts."""
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--address", default=os.environ.get("ip_head") or None,
                         help="IP:PORT of a running Ray cluster (default: $ip_head as exported by the "
                              "sbatch scripts; unset = start Ray locally)")
    cluster.add_argument("--runner-resource", metavar="NAME",
                         help="custom Ray resource every env runner needs (pins rollouts to nodes that have it)")
    cluster.add_argument("--learner-resource", metavar="NAME",
                         help="custom Ray resource the learner needs (pins it to the node that has it)")
    cluster.add_argument("--max-failures", type=whole_number, default=None,
                         help="restart the trial from its last checkpoint this many times after a crash "
                              "(default: 3 on a cluster, 0 locally; rlhpc/run/spec.py)")


def add_stop_flags(parser: argparse.ArgumentParser) -> None:
    """When to stop."""
    stopping = parser.add_argument_group("when to stop (whichever comes first)")
    stopping.add_argument("--stop-reward", type=float,
                          help="mean episode return to reach (default: the env's reward_threshold)")
    stopping.add_argument("--stop-iters", type=positive_number, help="training iterations")
    stopping.add_argument("--stop-timesteps", type=positive_number, help="env steps sampled")
    stopping.add_argument("--stop-time", type=float, metavar="SECONDS", help="wall time of training")
    stopping.add_argument("--as-test", action="store_true", help="exit 1 if the stop reward was not reached")
    stopping.add_argument("--stop-on", choices=["train", "eval"], default="train",
                          help="which return --stop-reward reads: the exploring policy's training return (100 "
                               "episodes) or the greedy evaluation's (needs --eval-interval)")


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """Greedy evaluations during training."""
    evaluation = parser.add_argument_group("evaluation during training (the best checkpoint is kept)")
    evaluation.add_argument("--eval-interval", type=whole_number, default=0, metavar="N",
                            help="every N iterations play --eval-episodes greedy episodes; the checkpoint with the "
                                 "best evaluation return is kept as <trial>/best_checkpoint (0: no evaluation)")
    evaluation.add_argument("--eval-episodes", type=positive_number, default=10, metavar="K",
                            help="episodes per evaluation")


def add_algorithm_flags(parser: argparse.ArgumentParser) -> None:
    """What trains: the algorithm's settings, the env's, seeds, config overrides."""
    algo = parser.add_argument_group("algorithm")
    algo.add_argument("--framework", choices=["torch", "tf2"], default="torch",
                      help="tf2 uses RLlib's legacy API stack and needs the [tf] extra")
    algo.add_argument("--num-envs-per-runner", type=positive_number,
                      help="vectorized envs in each env runner (default: per algorithm, see rlhpc/run/defaults.py)")
    algo.add_argument("--vectorize", choices=["auto", "sync", "async"], default="auto",
                      help="step each env runner's envs one after another (sync) or in parallel processes "
                           "(async: pays when a step takes milliseconds, as a simulator's does); auto times a "
                           "few steps of the env before Ray starts and picks (rlhpc/run/spec.py)")
    algo.add_argument("--normalize-obs", choices=["auto", "on", "off"], default="auto",
                      help="a running mean/std of observations in front of the policy, saved in checkpoints and "
                           "used by rlhpc.evaluate (auto: on for envs with continuous actions, see "
                           "rlhpc/run/defaults.py)")
    algo.add_argument("--anneal-lr", choices=["auto", "on", "off"], default="auto",
                      help="the learning rate falls linearly to 0 at --stop-timesteps, as CleanRL's PPO does "
                           "(auto: on for envs with continuous actions when --stop-timesteps is given, see "
                           "rlhpc/run/defaults.py)")
    algo.add_argument("--scale-rewards", choices=["auto", "on", "off"], default="auto",
                      help="PPO learns from rewards divided by a running std of the discounted return and clipped "
                           "at +-10, as CleanRL's does; returns are still reported as the env pays them. Try it where "
                           "episodes end early on a failure (auto: on only for the envs rlhpc/run/defaults.py names, "
                           "where it was measured to pay)")
    algo.add_argument("--env-timeout", type=non_negative_seconds, metavar="SECONDS",
                      help="an env copy whose step takes longer (a reset: 5x longer) is abandoned and rebuilt, as "
                           "one that raises is (default: 1000x a step's time measured before Ray starts, at least "
                           "60 s; 0: no limit; rlhpc/envs/guard.py)")
    algo.add_argument("--policies", metavar="shared|per-agent|MODULE:FUNCTION",
                      help="multi-agent envs: one policy for all agents (shared, the default), one per agent "
                           "(per-agent), or FUNCTION(agent_id, episode) -> policy id (rlhpc/envs/multi_agent.py)")
    algo.add_argument("--seed", type=int, help="seed for envs and networks")
    algo.add_argument("--seeds", type=seed_list, metavar="N|S1,S2,...",
                      help="one trial per seed (N: seeds 0..N-1), side by side as CPUs allow; rlhpc.compare draws "
                           "their mean with a 95%% confidence band")
    algo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override an algorithm config key (repeatable; nested keys with dots; values are "
                           "Python/JSON literals), e.g. --set lr=1e-3 --set model_config.fcnet_hiddens=[64,64]")
    algo.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE",
                      help="pass KEY=VALUE to the env's constructor (repeatable)")
    algo.add_argument("--config-file", metavar="EXP.yaml",
                      help="flags and config overrides from a YAML file (flat, or one entry per env); flags given "
                           "here win (rlhpc/run/config_file.py; examples in experiments/)")
    algo.add_argument("--print-config", action="store_true",
                      help="print the resolved config (runners, learners, GPUs, hyperparameters) and exit")


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    """Hyperparameter search."""
    search = parser.add_argument_group("hyperparameter search (trials run side by side as CPUs allow)")
    search.add_argument("--grid", action="append", default=[], metavar="KEY=[V1,V2,...]",
                        help="try every value (repeatable: all combinations), e.g. --grid lr=[1e-3,3e-4]")
    search.add_argument("--uniform", action="append", default=[], metavar="KEY=LOW,HIGH",
                        help="draw KEY uniformly from [LOW, HIGH] in each sample")
    search.add_argument("--loguniform", action="append", default=[], metavar="KEY=LOW,HIGH",
                        help="draw KEY log-uniformly (learning rates)")
    search.add_argument("--num-samples", type=positive_number, default=1,
                        help="repeat the grid this many times, drawing the random keys anew")
    search.add_argument("--metric", default="return",
                        help="what makes a trial best: return, steps_to_reward, time_to_reward, or a result "
                             "key such as env_runners/episode_len_mean")
    search.add_argument("--mode", choices=["max", "min"],
                        help="whether the metric is better high or low (default: max for return and result "
                             "keys, min for steps_to_reward and time_to_reward)")
    search.add_argument("--scheduler", choices=["asha", "hyperband", "pbt", "pb2"],
                        help="stop the worse trials early: asha (Tune's ASHAScheduler) compares the trials' "
                             "100-episode return at iterations grace, grace x factor, ... and stops all but the "
                             "best 1/factor at each; their CPUs go to the next trials. hyperband (Tune's "
                             "HyperBandScheduler): the same in brackets of several grace periods, synchronous. pbt "
                             "(Tune's PopulationBasedTraining): every --perturbation-interval iterations the worse "
                             "trials take a better one's weights and its --grid/--uniform/--loguniform values, "
                             "perturbed. pb2 (Tune's PB2): pbt whose new values a Gaussian process picks within the "
                             "--uniform/--loguniform ranges (searched linearly)")
    search.add_argument("--grace-period", type=positive_number, default=2,
                        help="--scheduler asha: iterations every trial trains before it can be stopped")
    search.add_argument("--reduction-factor", type=positive_number, default=3,
                        help="--scheduler asha/hyperband: keep the best 1/N of the trials at each rung")
    search.add_argument("--perturbation-interval", type=positive_number, default=4, metavar="N",
                        help="--scheduler pbt/pb2: iterations between a trial's exploit/explore steps")
    search.add_argument("--search", choices=["optuna", "bayesopt"],
                        help="pick each trial's values from the results so far, --num-samples trials in all: optuna "
                             "(Tune's OptunaSearch, TPE; --grid values become categories) or bayesopt (Tune's "
                             "BayesOptSearch, a Gaussian process over --uniform/--loguniform ranges, searched "
                             "linearly); pip install -e '.[search]'. Default: every --grid value, random draws")
    search.add_argument("--max-concurrent", type=positive_number, metavar="N",
                        help="at most N trials at once (default: as many as the allocation holds; a model-based "
                             "--search learns from fewer trials at once)")


def add_result_flags(parser: argparse.ArgumentParser):
    """Where results go. -> the group, which --resume joins (add_resume_flags)."""
    results = parser.add_argument_group("results")
    results.add_argument("--storage-path", default="~/ray_results", help="where experiments are written")
    results.add_argument("--name", help="experiment name (default: the env name)")
    results.add_argument("--checkpoint-freq", type=whole_number, default=10,
                         help="checkpoint every N iterations (0: only at the end); one is also saved at the "
                              "end and when SIGUSR1/SIGTERM/SIGINT stops the run (under Slurm: send USR1; a "
                              "plain scancel stops Ray at the same time)")
    return results


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    """Experiment trackers."""
    tracking = parser.add_argument_group("tracking (rlhpc/train/tracking.py)")
    tracking.add_argument("--wandb", choices=("offline", "online"),
                          help="log each trial to Weights & Biases; offline (compute nodes without internet) "
                               "writes <trial>/wandb/offline-run-*, to upload with `wandb sync` from a login node")
    tracking.add_argument("--mlflow", metavar="URI",
                          help="log each trial to MLflow: a folder (a file store on the shared filesystem) or a "
                               "tracking server's URI; the experiment is named after --name")


def add_resume_flags(results) -> None:
    """Continuing a run (in the results group)."""
    results.add_argument("--resume", nargs="?", const=True, default=False, metavar="EXPERIMENT_DIR",
                         help="continue the experiment at EXPERIMENT_DIR (default: the run named --name) from "
                              "its last checkpoint, with the flags it was started with; flags given here may "
                              "change where it runs (--num-cpus, --num-gpus, ...), not what it trains")
    results.add_argument("--allow-changes", action="store_true",
                         help="let --resume change what the run trains (--set, --env-config, --stop-*, ...); "
                              "the run records what changed and from which iteration")


TOKEN_SHOWN = "<token>"  # what a log shows in place of the token


def token_args(argv) -> list:
    """For each arg: "flag" (--redis-password, or an abbreviation argparse accepts, with the token after "="),
    "token" (the value after such a flag) or "" (anything else). The one rule for where a token is in argv."""
    kinds, after_flag = [], False
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if after_flag:
            kinds.append("token")
            after_flag = False
        elif len(flag) >= len("--red") and "--redis-password".startswith(flag):
            kinds.append("flag")
            after_flag = "=" not in arg
        else:
            kinds.append("")
    return kinds


def without_token(argv) -> list:
    """argv minus --redis-password and its value, in any form argparse accepts (--redis-pass=X, ...)."""
    return [arg for arg, kind in zip(argv, token_args(argv), strict=True) if not kind]


def redacted(argv) -> list:
    """argv with the token replaced by TOKEN_SHOWN (--redis-password <token>, --redis-pass=<token>): for logs."""
    shown = []
    for arg, kind in zip(argv, token_args(argv), strict=True):
        if kind == "token":
            shown.append(TOKEN_SHOWN)
        elif kind == "flag" and "=" in arg:
            shown.append(arg.split("=", 1)[0] + "=" + TOKEN_SHOWN)
        else:
            shown.append(arg)
    return shown
