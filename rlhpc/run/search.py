"""Hyperparameter search: grid and random search over algorithm config keys, with Tune.

    --grid lr=[1e-3,3e-4]  --grid model_config.fcnet_hiddens=[[32],[64]]   every combination
    --uniform lr=1e-5,1e-2  --loguniform lr=1e-5,1e-2  --num-samples 5     random draws

    --search optuna --loguniform lr=1e-5,1e-2 --num-samples 16                     a model picks each trial's values

Trials run side by side as far as the CPUs allow (each needs --num-cpus + 1; packing_line says how many), or
--max-concurrent. Every candidate value is checked against the config before Ray starts, like --set. The settings of
--scheduler pbt/pb2 and of --search are checked here too (check_population, check_searcher), and the best trial's
config is written as an experiment file (winner_file).
"""

import importlib.util
import json
import math
import os

from rlhpc.errors import UserError
from rlhpc.run.cli import parse_assignments
from rlhpc.run.results import as_number, env_steps, episode_return

# Names for --metric: what "best" means once the trials are done.
METRICS = {
    "return": ("final mean episode return", "max"),
    "steps_to_reward": ("env steps to reach the stop reward", "min"),
    "time_to_reward": ("training seconds to reach the stop reward", "min"),
}


# --metric names a trial has a value for only once it is done: PBT ranks the trials at every perturbation, and a
# --search learns from each trial's last result.
END_METRICS = ("steps_to_reward", "time_to_reward")
# --scheduler values that train a population whose worse trials take the better ones' weights.
POPULATION = ("pbt", "pb2")
# --search -> (the package Tune's searcher needs, as pip names it, the module it imports).
SEARCHERS = {"optuna": ("optuna", "optuna"), "bayesopt": ("bayesian-optimization<2", "bayes_opt")}
# The scheduler's decisions (ASHA's stopped trials, PBT's exploits), in the experiment dir.
SCHEDULER_FILE = "rlhpc_scheduler.json"
# The best trial's config, in the experiment dir, as a file --config-file reads (rlhpc.run.config_file).
WINNER_FILE = "best_trial.yaml"
# What the winner's file leaves out of the search's flags: the search itself, the experiment's name (a rerun
# gets its own dir), and what only says how this command ran.
NOT_FOR_THE_WINNER = {"grid", "uniform", "loguniform", "num_samples", "metric", "mode", "scheduler", "grace_period",
                      "reduction_factor", "perturbation_interval", "search", "max_concurrent", "seeds", "name",
                      "resume", "allow_changes", "print_config", "address", "redis_password"}


def parse_search(args) -> list:
    """-> [(path, kind, values)], kind in grid/uniform/loguniform; --seeds is a grid over the config's seed."""
    specs = []
    if getattr(args, "seeds", None):
        if args.seed is not None:
            raise UserError("--seed and --seeds: give one (--seeds runs one trial per seed)")
        specs.append((["seed"], "grid", list(args.seeds)))
    for path, value in parse_assignments(args.grid, "--grid"):
        if not isinstance(value, list) or not value:
            raise UserError(f"--grid {'.'.join(path)} needs a non-empty list, e.g. --grid lr=[1e-3,3e-4]")
        specs.append((path, "grid", value))
    for kind in ("uniform", "loguniform"):
        for item in getattr(args, kind):
            key, _, bounds = item.partition("=")
            try:
                low, high = (float(b) for b in bounds.split(","))
            except ValueError:
                raise UserError(f"malformed --{kind} {item!r}: expected KEY=LOW,HIGH, "
                                f"e.g. --{kind} lr=1e-5,1e-2") from None
            if not key or not low < high or (kind == "loguniform" and low <= 0):
                need = "LOW < HIGH and LOW > 0" if kind == "loguniform" else "LOW < HIGH"
                raise UserError(f"bad --{kind} {item!r}: need {need}")
            specs.append((key.split("."), kind, [low, high]))
    return specs


def searched_values(result_config: dict, specs) -> dict:
    """The values one trial got for the searched keys, e.g. {'lr': 0.001}."""
    values = {}
    for path, _, _ in specs:
        node = result_config
        for i, part in enumerate(path):
            if i == 0 and part not in node:
                part = f"_{part}"
            node = node.get(part, {}) if isinstance(node, dict) else {}
        values[".".join(path)] = node
    return values


def score(metrics: dict, metric: str, target):
    """A number to rank trials by (None: this trial does not count, e.g. never reached the reward)."""
    if metric == "return":
        return episode_return(metrics)
    if metric in ("steps_to_reward", "time_to_reward"):
        ret = episode_return(metrics)
        if target is None or ret is None or ret < target:
            return None
        return env_steps(metrics) if metric == "steps_to_reward" else metrics.get("time_total_s")
    node: object = metrics
    for part in metric.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return as_number(node)  # a --metric naming a dict or a string (a typo'd path) scores no trial


def best_trial(trials, metric: str, mode: str, target):
    """-> (score, trial) of the best trial that did not fail (report.TrialOutcome), (None, None) if none."""
    scored = [(score(r.metrics or {}, metric, target), r) for r in trials if not r.error]
    scored = [(s, r) for s, r in scored if s is not None]
    if not scored:
        return None, None
    pick = max if mode == "max" else min
    value, result = pick(scored, key=lambda pair: pair[0])
    return value, result


def importance(trials, space, metric: str, mode: str, target) -> dict:
    """{searched key: its share of the score's variance} by Optuna's fANOVA over the finished trials (report.
    TrialOutcome), largest first; {} with fewer than 2 keys (one key explains it all) or 2 different scores."""
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

    if len(space) < 2:
        return {}
    shapes: dict[str, BaseDistribution] = {
        ".".join(path): CategoricalDistribution([json.dumps(v) for v in values]) if kind == "grid" else
        FloatDistribution(values[0], values[1], log=kind == "loguniform") for path, kind, values in space}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for trial in trials:
        value = score(trial.metrics or {}, metric, target) if not trial.error else None
        if value is None:
            continue
        picked = searched_values(trial.config, space)
        params = {key: json.dumps(picked[key]) if isinstance(shape, CategoricalDistribution) else picked[key]
                  for key, shape in shapes.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=shapes, value=value))
    if len({trial.value for trial in study.trials}) < 2:  # no difference to explain (fANOVA raises)
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # its random forest: the same table each time
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def pbt_record(experiment_path: str, perturbation_interval: float, metric: str | None, scheduler: str = "pbt") -> tuple:
    """-> (path of <experiment>/rlhpc_scheduler.json, its PBT/PB2 record): as written so far (a resumed search goes
    on with it), or a new one with no exploits yet."""
    path = os.path.join(experiment_path, SCHEDULER_FILE)
    try:
        with open(path) as f:
            return path, json.load(f)
    except FileNotFoundError:
        return path, {"scheduler": scheduler, "perturbation_interval": perturbation_interval, "metric": metric,
                      "exploits": []}


def trial_count(space, num_samples: int, searcher: str | None = None) -> int:
    """Trials a search starts: every grid combination, --num-samples times; with --search, --num-samples."""
    if searcher:
        return num_samples
    return num_samples * math.prod(len(values) for _, kind, values in space if kind == "grid")


def grid_keys(space) -> list:
    """The dotted keys given as --grid lists (a model-based search or PB2 needs ranges for some)."""
    return [".".join(path) for path, kind, _ in space if kind == "grid"]


def check_searcher(args, space) -> None:
    """--search's settings, each bad one refused in one line before Ray starts."""
    searcher = getattr(args, "search", None)
    if not searcher:
        return
    package, module = SEARCHERS[searcher]
    if any(path == ("seed",) for path, _, _ in space):
        raise UserError(f"--search {searcher} with --seeds: search first, then run the winner with --seeds")
    if not space:
        raise UserError(f"--search {searcher} picks values for the keys of --uniform, --loguniform or --grid: give "
                        "at least one, e.g. --loguniform lr=1e-5,1e-2")
    grids = grid_keys(space)
    if searcher == "bayesopt" and grids:
        raise UserError(f"--search bayesopt searches ranges: give {grids[0]} as --uniform KEY=LOW,HIGH, or use "
                        "--search optuna (it takes --grid values as categories)")
    if args.scheduler in POPULATION:
        raise UserError(f"--search {searcher} with --scheduler {args.scheduler}: {args.scheduler} picks the trials' "
                        "new values itself; give one of them (--scheduler asha/hyperband goes with --search)")
    if args.metric in END_METRICS:
        raise UserError(f"--search {searcher} learns from each trial's last result, and --metric {args.metric} is "
                        "known only once the search is done: use --metric return or a result key")
    if importlib.util.find_spec(module) is None:
        raise UserError(f"--search {searcher} needs the {package.split('<')[0]} package: pip install -e "
                        f"'.[search]' (or pip install '{package}')")


def check_population(args, space, trials: int) -> None:
    """--scheduler pbt's and pb2's settings, each bad one refused in one line before Ray starts."""
    name = args.scheduler
    if any(path == ("seed",) for path, _, _ in space):
        raise UserError(f"--scheduler {name} with --seeds would copy the lucky seeds' weights into the others: search "
                        "first, then run the winner with --seeds")
    if trials < 2:
        raise UserError(f"--scheduler {name} trains a population in which the worse trials take the better ones' "
                        "weights: give --grid, --uniform or --loguniform with --num-samples N, for 2 trials or more")
    if not space:
        raise UserError(f"--scheduler {name} mutates the keys of --grid, --uniform and --loguniform: give at least "
                        "one, e.g. --loguniform lr=1e-5,1e-3")
    shaped = [".".join(path) for path, _, _ in space if path[0] == "model_config"]
    if shaped:  # a network of another shape cannot take the copied weights
        raise UserError(f"--scheduler {name} copies weights between trials, so it cannot search {shaped[0]} (the "
                        "network): search it without --scheduler, or with --scheduler asha")
    grids = grid_keys(space)
    if name == "pb2" and grids:  # PB2's Gaussian process models ranges of numbers
        raise UserError(f"--scheduler pb2 picks new values within ranges: give {grids[0]} as --uniform KEY=LOW,HIGH "
                        "or --loguniform, or use --scheduler pbt (it takes --grid lists)")
    if args.metric in END_METRICS:
        raise UserError(f"--scheduler {name} ranks the trials at every perturbation, and --metric {args.metric} is "
                        "known only once a trial is done: use --metric return or a result key")
    if args.stop_iters and args.perturbation_interval >= args.stop_iters:
        raise UserError(f"--perturbation-interval {args.perturbation_interval} with --stop-iters {args.stop_iters}: "
                        "the trials stop before their first exploit; give a shorter interval")


# When the trials that wait for resources start, by --scheduler (none: as others end).
QUEUED = {"asha": "as others end or are stopped", "hyperband": "as others end or are stopped",
          "pbt": "in turns: PBT pauses a trial at its perturbation while others wait",
          "pb2": "in turns: PB2 pauses a trial at its perturbation while others wait"}


def asked_for(per_trial: dict) -> dict:
    """The resources a trial's placement asks for that Ray schedules by (zero amounts and memory left out)."""
    return {res: amount for res, amount in per_trial.items() if amount and res != "memory"}


def trials_at_once(trials: int, per_trial: dict, have: dict, max_concurrent: int | None = None) -> int:
    """How many of the trials the cluster's totals of each resource hold at once, at most --max-concurrent."""
    return min([trials, *(int(have.get(res, 0) // amount) for res, amount in asked_for(per_trial).items()),
                *([max_concurrent] if max_concurrent else [])])


def packing_line(trials: int, per_trial: dict, have: dict, scheduler: str | None,
                 max_concurrent: int | None = None) -> str:
    """'4 trials at a time: 36 CPUs / 9 per trial': as many as the cluster's totals hold of each resource a trial's
    placement asks for (Tune starts every trial it has resources for), or --max-concurrent, and what happens to the
    rest. per_trial: {resource: amount} of one trial's bundles; have: ray.cluster_resources()."""
    asked = asked_for(per_trial)
    at_once = trials_at_once(trials, per_trial, have, max_concurrent)
    line = f"{at_once} trial{'' if at_once == 1 else 's'} at a time: " + ", ".join(
        f"{have.get(res, 0):g} {res}s / {amount:g} per trial" for res, amount in asked.items())
    if max_concurrent and at_once == max_concurrent < trials_at_once(trials, per_trial, have):
        line += f" (--max-concurrent {max_concurrent})"
    if at_once < trials:
        then = QUEUED.get(scheduler or "", "as others end")
        line += f"; the other {trials - at_once} queue and start {then}"
    return line


def winner_settings(flags, make_parser, winner: dict, *, name_env: str, num_gpus: float) -> dict:
    """The settings of an experiment file (rlhpc.run.config_file) that trains the winner again: the search's own
    flags as given (without the search), its env and GPUs (a script's defaults may differ), and the winner's
    values (winner: {dotted key: value}, searched_values') as config overrides, its seed as --seed."""
    from rlhpc.run.resume import given_flags

    parsed = vars(make_parser().parse_args(list(flags)))
    settings: dict = {"name_env": name_env}
    if num_gpus:
        settings["num_gpus"] = num_gpus
    for dest in sorted(given_flags(make_parser, list(flags)) - NOT_FOR_THE_WINNER):
        value = parsed[dest]
        if dest in ("set", "env_config"):
            value = {".".join(path): item for path, item in parse_assignments(value, "--" + dest.replace("_", "-"))}
        settings[dest] = value
    overrides = dict(settings.get("set", {}))
    for key, value in winner.items():
        if key == "seed":
            settings["seed"] = value
        else:
            overrides[key] = value
    if overrides:
        settings["set"] = overrides
    return json.loads(json.dumps(settings, default=str))  # plain YAML types (a tuple would not dump)


def winner_file(experiment_path: str, settings: dict, why: str) -> str:
    """Writes the winner's settings as <experiment>/best_trial.yaml; -> its path."""
    import yaml

    path = os.path.join(experiment_path, WINNER_FILE)
    with open(path, "w") as f:
        f.write(f"# {why}\n# train it again, or longer: --config-file {path} [--stop-iters N]\n")
        yaml.safe_dump(settings, f, sort_keys=False, default_flow_style=None)
    return path
