"""Early stopping against running every trial to the end: the same random search, with and without ASHA.

    python benchmarks/search.py                       # 8 trials of lr on SlowCartPole (1 ms steps), 12 iterations
    python benchmarks/search.py --trials 4 --stop-iters 8      # a quick look

Both searches train the same 8 learning rates (log-spaced from 1e-5 to 1e-2, a --grid), on an env whose step
waits 1 ms as a simulator's does, each trial sampling in its own process (--num-cpus 0: as many trials at a time as
the machine has cores). Measured: the search's wall time, from process start, and the best final 100-episode
return; ASHA's target (issue 29) is the same best return in at most half the wall time. Results: a table on stdout
and benchmarks/results/search.json.
"""

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import TRAINER, write_json

RETURN = "env_runners/episode_return_mean_100"


def learning_rates(n: int) -> list:
    """n learning rates spaced evenly in log between 1e-5 and 1e-2 (a grid: both searches train the same ones)."""
    return [float(f"{10 ** (-5 + 3 * k / (n - 1)):.2g}") for k in range(n)]


def search(name: str, args, scheduler: list) -> dict:
    with tempfile.TemporaryDirectory() as storage:
        cmd = [sys.executable, str(TRAINER), "--name-env", "custom_gym_env/custom_env.py:SlowCartPole",
               "--env-config", f"step_ms={args.step_ms}", "--grid", "lr=" + json.dumps(learning_rates(args.trials)),
               "--stop-iters", str(args.stop_iters), "--num-cpus", "0", "--seed", "0",
               "--storage-path", storage, "--name", name, *scheduler]
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, check=False,
                             cwd=Path(__file__).resolve().parent.parent)
        wall_s = time.perf_counter() - started
        finals, iterations = [], 0
        for progress in Path(storage, name).glob("*/progress.csv"):
            with open(progress) as f:
                rows = list(csv.DictReader(f))
            iterations += len(rows)
            if rows and rows[-1].get(RETURN) not in (None, "", "nan"):
                finals.append(float(rows[-1][RETURN]))
    return {"name": name, "exit_code": out.returncode, "wall_s": wall_s, "trials": len(finals),
            "iterations": iterations, "best_return": max(finals) if finals else math.nan,
            "error": None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["?"])[-1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--stop-iters", type=int, default=12)
    parser.add_argument("--step-ms", type=float, default=1.0)
    args = parser.parse_args()
    rows = [search("random", args, []),
            search("asha", args, ["--scheduler", "asha", "--grace-period", "2", "--reduction-factor", "3"])]
    print("| search | trials | iterations trained | best final return | wall time |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['trials']} | {row['iterations']} | {row['best_return']:.1f} | "
              f"{row['wall_s']:.0f} s |" + (f" failed: {row['error']}" if row["exit_code"] else ""), flush=True)
    random_row, asha_row = rows
    print(f"ASHA: {asha_row['wall_s'] / random_row['wall_s']:.2f}x the wall time, best return "
          f"{asha_row['best_return']:.1f} against {random_row['best_return']:.1f}")
    write_json("search", {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
