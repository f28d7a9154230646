"""Hyperparameter search: grid and random search over algorithm config keys, with Tune.

    --grid lr=[1e-3,3e-4]  --grid model_config.fcnet_hiddens=[[32],[64]]   every combination
    --uniform lr=1e-5,1e-2  --loguniform lr=1e-5,1e-2  --num-samples 5     random draws

Trials run side by side as far as the CPUs allow (each needs --num-cpus + 1). Every candidate
value is checked against the config before Ray starts, like --set.
"""

from rlhpc.errors import UserError
from rlhpc.run.cli import parse_assignments
from rlhpc.run.results import as_number, env_steps, episode_return

# Names for --metric: what "best" means once the trials are done.
METRICS = {
    "return": ("final mean episode return", "max"),
    "steps_to_reward": ("env steps to reach the stop reward", "min"),
    "time_to_reward": ("training seconds to reach the stop reward", "min"),
}


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
