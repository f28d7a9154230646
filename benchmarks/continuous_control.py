"""Learning quality on continuous control: the trainer's defaults on MuJoCo v5, beside published PPO results.

    pip install -e '.[envs,bench]'                                    # gymnasium[mujoco]
    python benchmarks/continuous_control.py                                       # 4 envs x 3 seeds x 1 M steps (hours)
    python benchmarks/continuous_control.py --envs HalfCheetah-v5 --seeds 1 --steps 1000000
    python benchmarks/continuous_control.py --envs Hopper-v5 --seeds 1 --steps 100000 --sb3   # wall time beside SB3

Each run is the trainer with no flags but the env, --seed and --stop-timesteps (and a --stop-reward out of reach, so
that every run takes all its steps; the defaults of the continuous family, rlhpc/run/defaults.py, --normalize-obs
auto, --anneal-lr auto, and --scale-rewards auto: on for Hopper and Walker2d only; InvertedPendulum's entry frees the
action std). Per env: the final 100-episode mean over the seeds with its 95 % band (rlhpc.outputs.compare.spread: a
bootstrap CI of the mean from 3 seeds on, else the range), env steps and wall time to CleanRL's figure where a run
got there, steps/s over training time, and beside them CleanRL's
ppo_continuous_action (Open RL Benchmark, MuJoCo v4, 1 M steps, 3 seeds) and RLlib's own targets
(rllib/tuned_examples/ppo/benchmark_ppo_mujoco.py, 1 M steps). With --sb3, Stable-Baselines3's PPO trains the same
env for as many steps right after (seed 1, one run, in a fresh process): its defaults are CleanRL's values, which the
continuous family uses, with VecNormalize for the observations, so the two differ in the trainer, not the settings.
Results: a table on stdout and benchmarks/results/continuous_control.json (continuous_control_<steps>.json for other
step counts); the runs are kept under --storage-path for `python -m rlhpc.compare`.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, TRAINER, write_json

sys.path.insert(0, str(REPO))

# env -> (CleanRL's 1 M-step mean, RLlib's 1 M-step target)
PUBLISHED = {
    "HalfCheetah-v5": (1443, 2000),
    "Hopper-v5": (2383, 2250),
    "Walker2d-v5": (2288, 3500),
    "InvertedPendulum-v5": (963, 1000),
}
SUMMARY = re.compile(r"return=(\S+)\s+iterations=\d+\s+env_steps=([\d,]+)\s+train_time=([\d.]+)s\s+"
                     r"wall_time=([\d.]+)s")


def reached(trial_dir: Path, target: float) -> tuple:
    """-> (env steps, training seconds) at the first iteration whose 100-episode mean reached target, or Nones."""
    from rlhpc.outputs.compare import read_progress

    data = read_progress(trial_dir)  # columns iteration, steps, time, return
    hits = data[data["return"] >= target] if data is not None else None
    if hits is None or hits.empty:
        return None, None
    first = hits.iloc[0]
    return int(first["steps"]), float(first["time"])


def run(env: str, seed: int, steps: int, storage: Path) -> dict:
    name = f"{env}_{seed}"  # rlhpc.compare draws the runs whose names differ by a trailing _N as one seed group
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(TRAINER), "--name-env", env, "--seed", str(seed),
                          "--stop-timesteps", str(steps), "--storage-path", str(storage), "--name", name,
                          "--stop-reward", "1e9"],  # all the steps: not stopped at the env's own threshold
                         capture_output=True, text=True, cwd=REPO, check=False)
    found = SUMMARY.search(out.stdout)
    if out.returncode not in (0, 1) or not found:  # 1: finished without reaching the env's own threshold
        return {"seed": seed, "exit_code": out.returncode, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    ret, env_steps, train_s, wall_s = found.groups()
    trials = sorted((storage / name).glob("*/progress.csv"))
    to_steps, to_s = reached(trials[-1].parent, PUBLISHED[env][0]) if trials else (None, None)
    said = [line for line in out.stdout.splitlines() if line.startswith("defaults for")]
    return {"seed": seed, "exit_code": out.returncode, "return": float(ret),
            "env_steps": int(env_steps.replace(",", "")),
            "train_s": float(train_s), "wall_s": float(wall_s), "process_s": time.perf_counter() - started,
            "steps_to_cleanrl": to_steps, "train_s_to_cleanrl": to_s, "said": said,
            "experiment_dir": str(storage / name)}


SB3_DEFAULTS = r'''
import sys, time
started = time.time()
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

env_name, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = VecNormalize(make_vec_env(env_name, n_envs=1, seed=seed), norm_reward=False)
model = PPO("MlpPolicy", env, seed=seed, device="cpu")  # SB3's defaults: CleanRL's values, the continuous family's
training = time.time()
model.learn(total_timesteps=steps)
episodes = [e["r"] for e in model.ep_info_buffer]  # the last 100
print("SB3", time.time() - training, time.time() - started, model.num_timesteps, sum(episodes) / len(episodes))
'''


def sb3_run(env: str, seed: int, steps: int) -> dict:
    """SB3's PPO with its defaults on the same env and steps, from a cold process: its training and wall time."""
    out = subprocess.run([sys.executable, "-c", SB3_DEFAULTS, env, str(seed), str(steps)], capture_output=True,
                         text=True, check=False)
    found = [line.split() for line in out.stdout.splitlines() if line.startswith("SB3 ")]
    if out.returncode or not found:
        return {"seed": seed, "exit_code": out.returncode, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    _, train_s, wall_s, env_steps, ret = found[-1]
    return {"seed": seed, "train_s": float(train_s), "wall_s": float(wall_s), "env_steps": int(env_steps),
            "return": float(ret)}


def row(env: str, runs: list) -> dict:
    from rlhpc.outputs.compare import spread

    done = [r for r in runs if "return" in r]
    returns = [r["return"] for r in done]
    low, high, what = spread(returns) if returns else (None, None, "no run finished")
    cleanrl, rllib = PUBLISHED[env]
    return {"env": env, "runs": runs, "mean": statistics.mean(returns) if returns else None, "low": low,
            "high": high, "band": what, "cleanrl": cleanrl, "rllib_target": rllib,
            "steps_per_s": statistics.mean(r["env_steps"] / r["train_s"] for r in done) if done else None,
            "reached_cleanrl": sum(r["steps_to_cleanrl"] is not None for r in done)}


def line(r: dict) -> str:
    if r["mean"] is None:
        return f"| {r['env']} | failed | | {r['cleanrl']:,} | {r['rllib_target']:,} | |"
    done = [x for x in r["runs"] if "return" in x]
    hit = [x for x in done if x["steps_to_cleanrl"] is not None]
    to = (f"{statistics.median(x['steps_to_cleanrl'] for x in hit):,.0f} steps, "
          f"{statistics.median(x['train_s_to_cleanrl'] for x in hit):,.0f} s ({len(hit)}/{len(done)} runs)"
          if hit else f"not reached (0/{len(done)})")
    band = f"{r['low']:,.0f}..{r['high']:,.0f}" if len(done) > 1 else "one seed"
    return (f"| {r['env']} | {r['mean']:,.0f} ({band}) | {to} | {r['cleanrl']:,} | {r['rllib_target']:,} | "
            f"{r['steps_per_s']:,.0f} steps/s, {statistics.mean(x['wall_s'] for x in done):,.0f} s wall |"
            + (sb3_cell(r, done) if "sb3" in r else ""))


def sb3_cell(r: dict, done: list) -> str:
    sb3 = r["sb3"]
    if "return" not in sb3:
        return f" SB3 failed: {sb3['error']} |"
    ratio = statistics.mean(x["wall_s"] for x in done) / sb3["wall_s"]
    return (f" SB3: {sb3['env_steps'] / sb3['train_s']:,.0f} steps/s, {sb3['wall_s']:,.0f} s wall, return "
            f"{sb3['return']:,.0f}; wall time ratio {ratio:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(PUBLISHED), help="comma-separated (default: all four)")
    parser.add_argument("--seeds", default="3", help="N: seeds 1..N (default: 3); or a list, 2,3: those seeds, added "
                        "to the env's row in the results file (its other seeds' runs kept)")
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per run (default: 1,000,000)")
    parser.add_argument("--sb3", action="store_true", help="and SB3's PPO, its defaults, one run per env")
    parser.add_argument("--storage-path", default=str(Path.home() / "ray_results" / "mujoco_benchmark"),
                        help="where the runs are kept")
    args = parser.parse_args()
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    unknown = [e for e in envs if e not in PUBLISHED]
    if unknown:
        parser.error(f"--envs: no published figures for {', '.join(unknown)} (known: {', '.join(PUBLISHED)})")
    seeds, adding = seed_list(args.seeds)
    storage = Path(args.storage_path).expanduser().absolute()
    print("| env | final 100-episode mean (band) | to CleanRL's figure | CleanRL | RLlib target | speed |"
          + (" SB3 (its defaults), same steps |" if args.sb3 else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.sb3 else ""), flush=True)
    for env in envs:
        runs = [run(env, seed, args.steps, storage) for seed in seeds]
        # Read again now: another env's run beside this one may have written its row meanwhile.
        rows = earlier_rows(args.steps)  # other envs' rows stay; an env run now replaces its own
        earlier = rows.get(env, {}) if adding else {}  # --seeds 2,3: the row's other seeds and notes stay
        runs = sorted([r for r in earlier.get("runs", []) if r["seed"] not in seeds] + runs, key=lambda r: r["seed"])
        rows[env] = {**row(env, runs), **{key: earlier[key] for key in ("constant_lr_before", "sb3") if key in earlier}}
        if args.sb3:
            rows[env]["sb3"] = sb3_run(env, 1, args.steps)
        print(line(rows[env]), flush=True)
        # after each env: a long run stopped half-way keeps the rows it finished
        path = write_json(results_name(args.steps), {"steps": args.steps, "rows": list(rows.values())})
    print(f"results: {path}; runs: {storage} (python -m rlhpc.compare {storage})")


def seed_list(text: str) -> tuple:
    """--seeds -> (the seeds, whether they are added to the runs already in the results file)."""
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()], True
    return list(range(1, int(text) + 1)), False


def results_name(steps: int) -> str:
    """continuous_control for the published 1 M steps, continuous_control_<steps> for a shorter look."""
    return "continuous_control" if steps == 1_000_000 else f"continuous_control_{steps}"


def earlier_rows(steps: int) -> dict:
    """{env: row} of this step count's results file, run before."""
    try:
        earlier = json.loads((REPO / "benchmarks" / "results" / f"{results_name(steps)}.json").read_text())
    except (OSError, ValueError):
        return {}
    return {r["env"]: r for r in earlier.get("rows", [])} if earlier.get("steps") == steps else {}


if __name__ == "__main__":
    main()
