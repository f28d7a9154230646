"""Compare training runs in one figure: mean episode return vs iteration, env steps or time.

    python -m rlhpc.compare ~/ray_results/one_core ~/ray_results/all_cores --x time
    python -m rlhpc.compare '~/ray_results/scaling_*' --x steps --out scaling.png --title "PPO, CartPole"

A RUN is an experiment dir (every trial in it), a trial dir, or a glob of either. Each trial is
one line, labelled with its experiment name plus the config keys that differ between the runs.
For a multi-agent env the return is the episode's total over agents; `--per-policy` adds a dashed
line for each policy's share (its agents' returns).

Trials that differ only by their seed (`--seeds`, or runs started one per seed) are one group: their
mean, with a band, and a line with the final return's mean and interval and the time and env steps to the
run's stop reward. The band is a 95 % bootstrap confidence interval of the mean from CI_MIN_SEEDS seeds on;
with fewer it is the seeds' range (min to max), drawn with each seed's own line and called a range: a
bootstrap "CI" of 2 seeds is exactly their min and max. A band covers the x range every seed of its group
reached (the mean past the shortest seed's end would be the mean of fewer seeds).

Runs of different envs are drawn in panels of their own, each titled with its algorithm and env.

The trials of a search with --scheduler are marked with what it decided (its rlhpc_scheduler.json): a trial ASHA or
HyperBand stopped early ends in an x and says so in its label; one that took another's weights (PBT, PB2) has a dot
at each exploit and says at which iterations.
"""

import argparse
import dataclasses
import glob
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rlhpc.errors import UserError, fail, warn
from rlhpc.run.cli import OneLineParser
from rlhpc.run.results import LEGACY_RETURN_METRIC, RETURN_METRIC, STEPS_METRIC

if TYPE_CHECKING:
    import pandas  # for Run's annotation; at run time pandas is imported where a run is read

# progress.csv column -> our name; the first column present wins (legacy API stack names last).
COLUMNS = {
    "iteration": ("training_iteration",),
    "steps": (STEPS_METRIC, f"env_runners/{STEPS_METRIC}", "timesteps_total"),
    "time": ("time_total_s",),
    "return": (RETURN_METRIC, LEGACY_RETURN_METRIC, "episode_reward_mean", "env_runners/episode_return_mean"),
}
POLICY_COLUMN = "env_runners/policy_return_mean_100/"  # + policy id: its share (rlhpc.algo.metrics)
EPISODES_COLUMN = "env_runners/num_episodes"  # RLlib's: episodes that ended in the iteration
X_LABELS = {"iteration": "training iteration", "steps": "env steps sampled", "time": "training time (s)"}
# Config keys people vary on purpose, shown first in labels; any other differing key follows.
KEY_ORDER = ("env", "policies", "num_env_runners", "num_envs_per_env_runner", "num_learners",
             "num_gpus_per_learner", "lr", "train_batch_size_per_learner", "minibatch_size", "num_epochs", "seed",
             "env_config", "model_config")
MAX_LABEL_KEYS = 4
BOOTSTRAP_SAMPLES, CONFIDENCE = 2000, 0.95
# From this many seeds a group's band is a bootstrap CI of the mean; below, the seeds' range. A percentile
# bootstrap of n values draws from n^n resamples of which few are distinct for small n (2 seeds: the band is
# their min and max exactly); 5 is the fewest seeds Henderson et al. (2018, "Deep RL that matters") advise.
CI_MIN_SEEDS = 5
Y_LABEL = "return: mean of the last 100 episodes (exploring policy)"
GRID_POINTS = 200  # where a group's runs are interpolated to be averaged
FIGSIZE, DPI = (8, 5), 100  # one panel: 800 x 500 pixels at the default --dpi


@dataclasses.dataclass
class Run:
    label: str
    path: Path  # the trial dir
    data: "pandas.DataFrame"  # columns: iteration, steps, time, return
    params: dict = dataclasses.field(default_factory=dict, repr=False)
    stopped_early: bool = False  # by the search's scheduler (marks)
    exploits: list = dataclasses.field(default_factory=list)  # iterations at which it took another's weights


def find_trials(path) -> list:
    """Trial dirs (those holding progress.csv) at an experiment dir, trial dir, or glob."""
    pattern = os.path.expanduser(str(path))
    matches = [pattern]
    if glob.has_magic(pattern):  # 'exp/*' also matches an experiment's own files (tuner.pkl, ...)
        matches = sorted(m for m in glob.glob(pattern) if os.path.isdir(m))
    if not matches:
        raise UserError(f"nothing matches {path}")
    trials = []
    for match in map(Path, matches):
        if not match.exists():
            raise UserError(f"no such directory: {match}")
        if not match.is_dir():
            raise UserError(f"{match} is not a directory: give an experiment dir or a trial dir")
        if (match / "progress.csv").is_file():
            trials.append(match)
        else:
            trials += sorted(p.parent for p in match.glob("*/progress.csv"))
    if not trials:
        raise UserError(f"no progress.csv in {path}: expected an experiment dir (e.g. ~/ray_results/NAME) "
                        "or one of its trial dirs")
    return trials


def read_progress(trial_dir):
    """A trial's progress.csv as columns iteration, steps, time, return (None if it has no rows yet)."""
    import pandas

    csv_path = Path(trial_dir) / "progress.csv"
    try:
        frame = pandas.read_csv(csv_path)
    except pandas.errors.EmptyDataError:
        return None
    except (OSError, pandas.errors.ParserError) as e:
        raise UserError(f"cannot read {csv_path}: {e}") from None
    if frame.empty:
        return None
    data = {}
    for name, candidates in COLUMNS.items():
        column = next((c for c in candidates if c in frame.columns), None)
        if column is None:
            raise UserError(f"{csv_path} has no {name} column ({' or '.join(candidates)}): not an RLlib run?")
        data[name] = frame[column]
    for column in frame.columns:
        if column.startswith(POLICY_COLUMN):
            data["policy:" + column.removeprefix(POLICY_COLUMN)] = frame[column]
    return without_carried_returns(pandas.DataFrame(data), frame)


def without_carried_returns(data, frame):
    """NaN for the returns of an iteration in which no episode ended (the first after a resume, often): it carries
    the window's mean, and is not a new point of the curve."""
    if EPISODES_COLUMN in frame.columns:
        new_episodes = frame[EPISODES_COLUMN] > 0
        for name in data.columns:
            if name == "return" or name.startswith("policy:"):
                data[name] = data[name].where(new_episodes)
    return data


def policies(data) -> list:
    return [column.removeprefix("policy:") for column in data.columns if column.startswith("policy:")]


def final_return(data) -> float:
    """The last reported mean return (NaN before the first finished episode); -inf if none."""
    if data is None:
        return -math.inf
    values = data["return"].dropna()
    return float(values.iloc[-1]) if len(values) else -math.inf


def read_params(trial_dir) -> dict:
    try:
        with open(Path(trial_dir) / "params.json") as f:
            params = json.load(f)
        return params if isinstance(params, dict) else {}
    except (OSError, ValueError):
        return {}


def load_runs(paths) -> list:
    """Every trial under `paths` (experiment dirs, trial dirs, globs) as a labelled Run."""
    runs, seen = [], set()
    for path in paths:
        for trial in find_trials(path):
            if trial.resolve() in seen:
                continue
            seen.add(trial.resolve())
            data = read_progress(trial)
            if data is None:
                warn(f"{trial / 'progress.csv'} has no results yet: skipped")
                continue
            runs.append(Run(label=trial.parent.name, path=trial, data=data, params=read_params(trial)))
    if not runs:
        raise UserError(f"no results yet in {', '.join(map(str, paths))}: every progress.csv is empty")
    _label(runs)
    marks(runs)
    return runs


def marks(runs) -> None:
    """What a search's scheduler decided about each run, from <experiment>/rlhpc_scheduler.json: in its label, and
    as the Run's stopped_early and exploits (drawn by _draw_group)."""
    from rlhpc.run.search import SCHEDULER_FILE

    records: dict = {}
    for run in runs:
        experiment = run.path.parent
        if experiment not in records:
            try:
                records[experiment] = json.loads((experiment / SCHEDULER_FILE).read_text())
            except (OSError, ValueError):
                records[experiment] = {}
        record = records[experiment]
        scheduler = record.get("scheduler", "scheduler")
        stopped = [e["iteration"] for e in record.get("stopped_early", []) if e.get("trial") == run.path.name]
        run.exploits = [e["iteration"] for e in record.get("exploits", []) if e.get("trial") == run.path.name]
        if stopped:
            run.stopped_early = True
            run.label += f" [{scheduler} stopped it at iteration {stopped[0]}]"
        if run.exploits:
            at = ", ".join(map(str, run.exploits))
            run.label += f" [{scheduler}: took another trial's weights at iteration {at}]"


def _comparable(params: dict) -> dict:
    """Top-level config values as short text, keyed without the private prefix. A multi-agent run's policies
    by their ids (their mapping follows from them: rlhpc.envs.multi_agent)."""
    short = {key.lstrip("_"): value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
             for key, value in params.items() if key != "policy_mapping_fn"}
    if isinstance(params.get("policies"), dict):
        short["policies"] = ",".join(sorted(params["policies"]))
    return short


def _noise(flats) -> set:
    # A function's repr holds its address, which changes every run: never a real difference.
    return {k for flat in flats for k, text in flat.items() if re.search(r" at 0x[0-9a-f]+", text)}


def _label(runs, ignore=()) -> None:
    """Experiment name + the keys that differ between runs; the trial dir name if still ambiguous."""
    flats = [_comparable(run.params) for run in runs]
    keys = set().union(*flats) - set(ignore)
    noise = _noise(flats)
    differing = [k for k in keys - noise if len({flat.get(k) for flat in flats}) > 1]
    differing.sort(key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))
    shown = differing[:MAX_LABEL_KEYS]
    for run, flat in zip(runs, flats, strict=True):
        # A key a run does not set (null, or absent) is left out of its label rather than shown as "null".
        parts = [f"{k}={flat[k]}" for k in shown if flat.get(k) not in (None, "null")]
        run.label = run.path.parent.name + (f" ({', '.join(parts)})" if parts else "")
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.path.parent.name}/{run.path.name}"


@dataclasses.dataclass
class Group:
    """Runs that differ only by seed (or one run alone)."""

    label: str
    runs: list


def experiment_base(run) -> str:
    """The run's experiment name without a trailing _N: a job array's tasks (name, name_2, ...) and runs started one
    per seed (env_1, env_2, ...) are one experiment to compare."""
    name = run.path.parent.name
    return name.rsplit("_", 1)[0] if re.search(r"_\d+$", name) else name


def seed_groups(runs) -> list:
    """Runs grouped by every setting but the seed; a group only where the seeds differ."""
    flats = [_comparable(run.params) for run in runs]
    noise = _noise(flats)
    by_key: dict[tuple, list] = {}
    for run, flat in zip(runs, flats, strict=True):
        key = json.dumps({k: v for k, v in flat.items() if k not in noise and k != "seed"}, sort_keys=True)
        by_key.setdefault((experiment_base(run), key), []).append(run)
    groups = []
    for members in by_key.values():
        seeds = [m.params.get("seed") for m in members]
        if len(members) > 1 and None not in seeds and len(set(map(str, seeds))) == len(members):
            groups.append(Group(label="", runs=members))
        else:
            groups += [Group(label=m.label, runs=[m]) for m in members]
    banded = [g for g in groups if len(g.runs) > 1]
    if banded:  # name a group by what differs between the groups, not by seed
        firsts = [g.runs[0] for g in groups]
        labels = {id(r): r.label for r in firsts}
        _label(firsts, ignore={"seed"})
        for group in groups:
            first = group.runs[0]
            if len(group.runs) > 1:
                text, name = first.label, first.path.parent.name
                if len({run.path.parent.name for run in group.runs}) > 1 and text.startswith(name):
                    text = experiment_base(first) + text[len(name):]  # env_1, env_2, env_3: the group is "env"
                group.label = f"{text} ({len(group.runs)} seeds)" if "(" not in text else \
                    text[:-1] + f"; {len(group.runs)} seeds)"
            first.label = labels[id(first)]  # a run keeps its own label (with its seed) in its summary line
    return groups


def band(group: Group, x: str, column: str = "return"):
    """-> (grid, mean, low, high, name) or None: the runs interpolated onto one x grid over the range every run
    covers (from the latest first value to the earliest last one), their mean and its band (spread())."""
    import numpy as np

    curves = [(run.data[x].to_numpy(dtype=float), run.data[column].to_numpy(dtype=float)) for run in group.runs]
    curves = [(xs[~np.isnan(ys)], ys[~np.isnan(ys)]) for xs, ys in curves]
    curves = [(xs, ys) for xs, ys in curves if len(xs)]
    if len(curves) < 2:
        return None
    start, end = max(xs[0] for xs, _ in curves), min(xs[-1] for xs, _ in curves)
    if start > end:
        return None  # the runs share no stretch of x
    grid = np.linspace(start, end, GRID_POINTS)
    values = np.array([np.interp(grid, xs, ys) for xs, ys in curves])
    low, high = np.array([spread(column_values)[:2] for column_values in values.T]).T
    return grid, values.mean(axis=0), low, high, spread(values[:, 0])[2]


def spread(values) -> tuple:
    """-> (low, high, what it is): the 95 % bootstrap CI of the mean from CI_MIN_SEEDS values on, else their range."""
    if len(values) >= CI_MIN_SEEDS:
        return (*interval(values), f"{CONFIDENCE:.0%} CI")
    return float(min(values)), float(max(values)), f"range of {len(values)} seeds"


def interval(values) -> tuple:
    """The 95 % bootstrap confidence interval of the mean of values (a fixed seed: the figure is reproducible)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), (BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def env_and_algo(run) -> tuple:
    """(env, algorithm) of a run, from its params.json and its run record ("?" where neither says)."""
    from rlhpc.run.experiment import read_run_record

    algo = read_run_record(run.path).algo or run.path.name.split("_", 1)[0] or "?"
    return str(run.params.get("env") or "?"), algo


def panels(groups) -> list:
    """[(env, algorithms, groups)]: one panel per env, so that returns on different scales never share an axis."""
    by_env: dict = {}
    for group in groups:
        env, algo = env_and_algo(group.runs[0])
        algos, members = by_env.setdefault(env, ([], []))
        if algo not in algos:
            algos.append(algo)
        members.append(group)
    return [(env, algos, members) for env, (algos, members) in by_env.items()]


def draw(groups, x: str, title=None, per_policy=False, dpi: float = DPI):
    """The figure (matplotlib's, open: the caller saves and closes it): a panel per env, a line per run, a mean
    and band per seed group, one legend entry per group."""
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    laid_out = panels(groups)
    fig, axes = plt.subplots(1, len(laid_out), figsize=(FIGSIZE[0] * len(laid_out), FIGSIZE[1]), dpi=dpi,
                             squeeze=False)
    for ax, (env, algos, members) in zip(axes[0], laid_out, strict=True):
        for group in members:
            _draw_group(ax, group, x, per_policy)
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(Y_LABEL)
        ax.set_title(f"{', '.join(algos)} on {env}" if title is None or len(laid_out) > 1 else title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small" if len(members) <= 6 else "x-small")
    if title is not None and len(laid_out) > 1:
        fig.suptitle(title)
    fig.tight_layout()  # inside the fixed figure size: the PNG is always panels x FIGSIZE x dpi pixels
    return fig


def _draw_group(ax, group: Group, x: str, per_policy: bool) -> None:
    drawn = band(group, x) if len(group.runs) > 1 else None
    if drawn is not None:
        grid, mean, low, high, name = drawn
        [line] = ax.plot(grid, mean, linewidth=1.5)
        color = line.get_color()
        ax.fill_between(grid, low, high, color=color, alpha=0.25, linewidth=0)
        if len(group.runs) < CI_MIN_SEEDS:  # a range of a few seeds: show the seeds themselves too
            for run in group.runs:
                ax.plot(*points(run.data, x, "return"), color=color, linewidth=0.7, alpha=0.5)
        line.set_label(f"{group.label}: mean, band = {name}")  # the one legend entry of the group
        return
    for run in group.runs:
        [line] = ax.plot(*points(run.data, x, "return"), label=run.label, linewidth=1.5)
        _draw_marks(ax, run, x, line.get_color())
        for policy in policies(run.data) if per_policy else ():
            ax.plot(*points(run.data, x, "policy:" + policy), label=f"{run.label}: {policy}", linewidth=1,
                    linestyle="--", color=line.get_color(), alpha=0.7)


def _draw_marks(ax, run, x: str, color) -> None:
    """The scheduler's decisions on a run's curve: an x where it was stopped, a dot at each exploit."""
    xs, ys = points(run.data, x, "return")
    if run.stopped_early and len(xs):
        ax.plot(xs.iloc[-1], ys.iloc[-1], marker="x", markersize=9, color=color)
    for iteration in run.exploits:
        at = run.data["iteration"] == iteration
        if at.any() and run.data["return"][at].notna().any():
            ax.plot(run.data[x][at].iloc[0], run.data["return"][at].iloc[0], marker="o", color=color)


def points(data, x: str, column: str) -> tuple:
    """The (x, y) of a curve's rows that have a value: NaN rows (no episode yet, or none ended in that iteration)
    are left out rather than breaking the line."""
    rows = data[column].notna()
    return data[x][rows], data[column][rows]


def plot(groups, x: str, out, title=None, per_policy=False, dpi: float = DPI) -> None:
    import matplotlib.pyplot as plt

    fig = draw(groups, x, title, per_policy, dpi)
    try:
        fig.savefig(out, dpi=dpi)
    except (OSError, ValueError) as e:  # unwritable dir, unknown image suffix
        raise UserError(f"cannot write {out}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        plt.close(fig)


def summary_line(run) -> str:
    data = run.data
    steps, seconds = data["steps"].iloc[-1], data["time"].iloc[-1]
    ret = final_return(data)
    shares = [f"{policy} {data['policy:' + policy].dropna().iloc[-1]:.2f}" for policy in policies(data)
              if len(data["policy:" + policy].dropna())]
    return (f"{run.label}: {int(data['iteration'].iloc[-1])} iterations, {int(steps):,} steps, {seconds:.1f} s, "
            f"{steps / seconds if seconds else 0:,.0f} steps/s, final return "
            + ("-" if math.isinf(ret) else f"{ret:.2f}") + (f" ({', '.join(shares)})" if shares else ""))


def group_line(group: Group) -> str:
    """A seed group: final return mean [CI], and the time and env steps to the stop reward the runs had."""
    from rlhpc.run.experiment import read_run_record
    from rlhpc.run.results import target_reward

    finals = [final_return(run.data) for run in group.runs]
    finals = [f for f in finals if not math.isinf(f)]
    seeds = ", ".join(str(run.params.get("seed")) for run in group.runs)
    text = f"{group.label}: seeds {seeds}"
    if finals:
        low, high, name = spread(finals)
        text += f"; final return {sum(finals) / len(finals):.2f} [{low:.2f}, {high:.2f}] ({name})"
    target = target_reward(read_run_record(group.runs[0].path).stop)
    if target is None:
        return text
    reached = []
    for run in group.runs:
        hit = run.data[run.data["return"] >= target]
        if len(hit):
            reached.append((float(hit["time"].iloc[0]), float(hit["steps"].iloc[0])))
    text += f"; {len(reached)} of {len(group.runs)} reached {target:g}"
    if len(reached) >= 2:
        for k, (name, unit) in enumerate((("time", " s"), ("steps", ""))):
            values = [r[k] for r in reached]
            low, high, _ = spread(values)
            text += (f", {name} {sum(values) / len(values):,.1f}{unit} [{low:,.1f}, {high:,.1f}]" if k == 0 else
                     f", {name} {sum(values) / len(values):,.0f} [{low:,.0f}, {high:,.0f}]")
    return text


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m rlhpc.compare", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="experiment dir, trial dir, or a glob (quoted)")
    parser.add_argument("--x", choices=list(X_LABELS), default="iteration", help="x axis (default: iteration)")
    parser.add_argument("--out", default="compare.png", help="image to write (default: compare.png)")
    parser.add_argument("--title", help="figure title (default: each panel's algorithm and env)")
    parser.add_argument("--dpi", type=float, default=DPI,
                        help=f"dots per inch; a panel is {FIGSIZE[0]} x {FIGSIZE[1]} inches (default: {DPI})")
    parser.add_argument("--per-policy", action="store_true",
                        help="multi-agent runs: also each policy's share of the return (dashed)")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
        if args.per_policy and not any(policies(run.data) for run in runs):
            raise UserError("--per-policy: none of these runs is multi-agent (no policy_return_mean_100 columns)")
        groups = seed_groups(runs)
        plot(groups, args.x, args.out, args.title, args.per_policy, args.dpi)
    except UserError as e:
        fail(str(e))
    for group in groups:
        for run in group.runs:
            print(summary_line(run))
        if len(group.runs) > 1:
            print(group_line(group))
    banded = sum(len(g.runs) > 1 for g in groups)
    envs = len(panels(groups))
    print(f"wrote {args.out} ({len(runs)} run{'s' if len(runs) > 1 else ''}"
          + (f", {banded} seed group{'s' if banded > 1 else ''} as mean and band over the x range all its seeds "
             "reached" if banded else "")
          + (f", {envs} envs in panels of their own" if envs > 1 else "") + f", x = {X_LABELS[args.x]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
