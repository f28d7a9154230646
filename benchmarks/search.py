"""Early stopping and population-based training against running fixed settings to the end.

    python benchmarks/search.py                       # 8 trials of lr on SlowCartPole (1 ms steps), 12 iterations
    python benchmarks/search.py --trials 4 --stop-iters 8      # a quick look
    python benchmarks/search.py --parts pbt                    # one row again; the others kept in the JSON
    python benchmarks/search.py --env CartPole-v1 --stop-iters 25 --parts fixed,pbt   # tried as a schedule case
    python benchmarks/search.py --parts random,random_asha     # the issue's case: lr and net size, with/without ASHA
    python benchmarks/search.py --env Pendulum-v1 --stop-iters 38 --parts fixed,pbt --perturbation-interval 4
                                                               # PBT's case (150 k steps; --seed 1, 2, 3: more runs)

"fixed" and "asha" train the same 8 learning rates (log-spaced from 1e-5 to 1e-2, a --grid, in an order shuffled
with a fixed seed: ASHA compares a trial at a rung only with those that got there before, and a grid from the worst
rate up gives it nothing to compare with), on an env whose step waits 1 ms as a simulator's does, each trial
sampling in its own process (--num-cpus 0: as many trials at a time as the machine has cores). "pbt" trains a
population of as many trials over the same range (--loguniform), exploiting every --perturbation-interval (2)
iterations: the same budget of iterations. "random" and "random_asha" are the issue's own case: a random search over
lr (--loguniform) and the network's size (--grid of two), --samples draws of lr for each size (16 trials by default),
drawn the same in both (Tune's generator is seeded from --seed), once to the end and once with the same ASHA.
Measured: the search's wall time, from process start, and the best final 100-episode return, and each trial's final
return and (PBT) its exploits, as the search's rlhpc_scheduler.json kept them.
--env CartPole-v1 --stop-iters 25 was tried as a case where a schedule could pay (a high rate learning fast early,
a lower one keeping the top): measured, it is not one: the best lr falling to 0 ends 3 above the best constant
(3 seeds, benchmarks/README.md). --env Pendulum-v1 --stop-iters 38 (150 k steps) is one: a rate falling to 0
ends 9 above the best constant on the mean and far narrower over 3 seeds, and there PBT's best ends above the grid's
in 3 runs of 4.
Targets (issue 29): ASHA the same best return in at most half the wall time; PBT a return the best fixed
setting does not reach, in its budget. Results: a table on stdout and benchmarks/results/search.json.
"""

import argparse
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, TRAINER, write_json

RESULTS = REPO / "benchmarks" / "results"

RETURN = "env_runners/episode_return_mean_100"


def learning_rates(n: int) -> list:
    """n learning rates spaced evenly in log between 1e-5 and 1e-2 (a grid: both searches train the same ones), in
    an order shuffled with a fixed seed."""
    rates = [float(f"{10 ** (-5 + 3 * k / (n - 1)):.2g}") for k in range(n)]
    random.Random(0).shuffle(rates)
    return rates


def search_flags(name: str, args) -> list:
    """The flags of each part: the grid to the end, the grid with ASHA, a PBT population of as many trials."""
    grid = ["--grid", "lr=" + json.dumps(learning_rates(args.trials))]
    asha = ["--scheduler", "asha", "--grace-period", "2", "--reduction-factor", "3"]
    drawn = ["--loguniform", "lr=1e-5,1e-2", "--grid", "model_config.fcnet_hiddens=[[32,32],[256,256]]",
             "--num-samples", str(args.samples)]
    return {"fixed": grid,
            "asha": [*grid, *asha],
            "random": drawn,
            "random_asha": [*drawn, *asha],
            "pbt": ["--loguniform", "lr=1e-5,1e-2", "--num-samples", str(args.trials), "--scheduler", "pbt",
                    "--perturbation-interval", str(args.perturbation_interval)]}[name]


def search(name: str, args) -> dict:
    with tempfile.TemporaryDirectory() as storage:
        env = ["--name-env", args.env] if args.env != SLOW else ["--name-env", SLOW, "--env-config",
                                                                f"step_ms={args.step_ms}"]
        cmd = [sys.executable, str(TRAINER), *env, "--stop-iters", str(args.stop_iters), "--num-cpus", "0",
               "--seed", str(args.seed), "--storage-path", storage, "--name", name, *search_flags(name, args)]
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, check=False,
                             cwd=Path(__file__).resolve().parent.parent)
        wall_s = time.perf_counter() - started
        finals, iterations, train_s = {}, 0, 0.0
        for progress in sorted(Path(storage, name).glob("*/progress.csv")):
            with open(progress) as f:
                rows = list(csv.DictReader(f))
            iterations += len(rows)
            train_s += sum(float(row["time_this_iter_s"]) for row in rows)
            if rows and rows[-1].get(RETURN) not in (None, "", "nan"):
                finals[progress.parent.name] = float(rows[-1][RETURN])
        decisions = Path(storage, name, "rlhpc_scheduler.json")  # ASHA's stops, PBT's exploits
        kept = json.loads(decisions.read_text()) if decisions.exists() else None
    # What the trials cost beyond their iterations (an actor's start, the algorithm's build, checkpoints, a slot
    # left idle), per trial: the slots' time (wall x trials at a time: one per core with --num-cpus 0) less the
    # iterations' own time. ASHA saves iterations, not this.
    slots = os.cpu_count() or 1
    return {"name": name, "exit_code": out.returncode, "wall_s": wall_s, "trials": len(finals),
            "iterations": iterations, "iterations_s": train_s,
            "beyond_iterations_per_trial_s": (slots * wall_s - train_s) / max(len(finals), 1),
            "best_return": max(finals.values()) if finals else math.nan,
            "final_returns": finals, "scheduler": kept,
            "error": None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["?"])[-1]}


PARTS = ("fixed", "asha", "pbt", "random", "random_asha")
SLOW = "custom_gym_env/custom_env.py:SlowCartPole"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8, help="random parts: draws of lr for each network size")
    parser.add_argument("--stop-iters", type=int, default=12)
    parser.add_argument("--step-ms", type=float, default=1.0, help="SlowCartPole's step")
    parser.add_argument("--perturbation-interval", type=int, default=2, help="pbt: iterations between exploits")
    parser.add_argument("--seed", type=int, default=0, help="the searches' --seed (another seed: another results file)")
    parser.add_argument("--env", default=SLOW, help="the env searched (default: SlowCartPole)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(set(parts) - set(PARTS)))} (known: {', '.join(PARTS)})")
    kept = {}
    try:  # the rows of parts not run now stay (run with the same settings, or they are dropped)
        earlier = json.loads((RESULTS / f"{results_name(args)}.json").read_text())
        settings = {k: v for k, v in vars(args).items() if k != "parts"}
        # a file written before a setting existed ran with its default
        if all(earlier.get("settings", {}).get(k, parser.get_default(k)) == v for k, v in settings.items()):
            for row in earlier["rows"]:
                kept[row["name"]] = row
    except (OSError, ValueError):
        pass
    rows = {**kept, **{name: search(name, args) for name in parts}}
    print("| search | trials | iterations trained | best final return | wall time |")
    print("|---|---|---|---|---|")
    for row in rows.values():
        print(f"| {row['name']} | {row['trials']} | {row['iterations']} | {row['best_return']:.1f} | "
              f"{row['wall_s']:.0f} s |" + (f" failed: {row['error']}" if row["exit_code"] else ""), flush=True)
    for name, against in (("asha", "fixed"), ("pbt", "fixed"), ("random_asha", "random")):
        if name in rows and against in rows:
            base = rows[against]
            print(f"{name}: {rows[name]['wall_s'] / base['wall_s']:.2f}x {against}'s wall time, "
                  f"{rows[name]['iterations'] / base['iterations']:.2f}x its iterations, best return "
                  f"{rows[name]['best_return']:.1f} against {base['best_return']:.1f}")
    for row in rows.values():
        if "iterations_s" in row:
            print(f"{row['name']}: {row['iterations_s']:.0f} s in iterations, "
                  f"{row['beyond_iterations_per_trial_s']:.1f} s per trial beyond them")
    write_json(results_name(args), {"settings": {k: v for k, v in vars(args).items() if k != "parts"},
                          "rows": list(rows.values())})



def results_name(args) -> str:
    """search.json for SlowCartPole, search_<env>.json for another env; _seed<N> added for a --seed other than 0."""
    name = "search" if args.env == SLOW else "search_" + args.env.split(":")[-1].replace("-", "_").lower()
    return name + (f"_seed{args.seed}" if args.seed else "")


if __name__ == "__main__":
    main()
