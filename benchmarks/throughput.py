"""Throughput: env steps/s against --num-cpus and envs per runner, and the raw env's step rate.

    python benchmarks/throughput.py                         # CartPole-v1, PPO, 6 iterations each
    python benchmarks/throughput.py --cpus 0 1 2 --envs 1 8

Steps/s is taken from progress.csv over the iterations after the first (warm-up excluded).
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from _common import TRAINER, write_json


def raw_env_rate(n_envs=8, seconds=3.0) -> float:
    """Random actions in a synchronous vector env on one core: the ceiling for sampling."""
    env = gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync")
    env.reset(seed=0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        env.step(np.asarray(env.action_space.sample()))
        steps += n_envs
    return steps / (time.perf_counter() - started)


def trainer_rate(num_cpus: int, envs: int, iters: int):
    """Env steps/s, or the trainer's one-line refusal (e.g. more runners than this machine's CPUs)."""
    with tempfile.TemporaryDirectory() as storage:
        out = subprocess.run([sys.executable, str(TRAINER), "--name-env", "CartPole-v1", "--stop-iters", str(iters),
                              "--num-cpus", str(num_cpus), "--num-envs-per-runner", str(envs), "--stop-reward", "1e9",
                              "--storage-path", storage, "--name", "t"], capture_output=True, text=True, timeout=900,
                             env={**os.environ}, check=False)
        if out.returncode:
            return next((line for line in out.stderr.splitlines() if line.startswith("error:")), "failed")
        with open(next(Path(storage, "t").glob("*/progress.csv"))) as f:
            rows = list(csv.DictReader(f))
    steps = float(rows[-1]["num_env_steps_sampled_lifetime"]) - float(rows[0]["num_env_steps_sampled_lifetime"])
    seconds = float(rows[-1]["time_total_s"]) - float(rows[0]["time_total_s"])
    return steps / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=6)
    args = parser.parse_args()
    raw = raw_env_rate()
    print(f"raw CartPole-v1 (8-env sync vector, random actions, one core): {raw:,.0f} steps/s")
    table = []
    print(f"{'--num-cpus':>10} {'envs/runner':>12} {'env steps/s (sample + learn)':>30}")
    for cpus in args.cpus:
        for envs in args.envs:
            rate = trainer_rate(cpus, envs, args.iters)
            table.append({"num_cpus": cpus, "envs_per_runner": envs, "steps_per_s": rate})
            shown = f"{rate:>30,.0f}" if isinstance(rate, float) else f"  {rate}"
            print(f"{cpus:>10} {envs:>12} {shown}")
    print("written:", write_json("throughput", {"raw_env_steps_per_s": raw, "table": table}))


if __name__ == "__main__":
    main()
