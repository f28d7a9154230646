"""More parallel envs, faster training? Sampling throughput and time to the stop reward on a slow env, vs SB3.

    python benchmarks/scaling.py                          # everything below, ~15 min on 2 cores
    python benchmarks/scaling.py --parts sampling         # only the throughput table
    python benchmarks/scaling.py --parts solve --envs 1 32 --step-ms 5
    python benchmarks/scaling.py --parts crossover        # sync vs async, 8 envs, as the step grows: auto's rule
    SLURMCI_CPUS=12 bash tests/slurm/cluster.sh up && SLURM_CONF=/tmp/slurmci/slurm.conf \
        python benchmarks/scaling.py --parts slurm         # 32 envs over 3 Slurm nodes (multi_node_trainer.sh)

The env is custom_gym_env's SlowCartPole: CartPole whose step sleeps `step_ms` (a simulator that waits on an
external program) or busy-works `cpu_ms` (one that computes in-process).

- sampling: env steps per second of RLlib sampling (the project's config, RLlib's own env runners, no learning)
  as parallel envs grow, in the driver (0 env runners, async sub-envs) and spread over remote env runners;
  efficiency = measured / ideal, ideal = parallel envs / step time (for cpu_ms: cores / step time). Beside it,
  SB3's SubprocVecEnv stepping the same envs with random actions (no policy: an upper bound for SB3).
- solve: time from process start to a 100-episode mean of 195 (CartPole-v0's criterion, 200-step episodes)
  with 1 env and with N, this project vs SB3 PPO with SubprocVecEnv(N) (rl-zoo's CartPole hyperparameters);
  the return-vs-wall-time figure (rlhpc.outputs.compare) of this project's 1-env and N-env runs.
- slurm: the same sampling throughput through `sbatch slurm/multi_node_trainer.sh` on a Slurm cluster
  (SLURM_CONF; tests/slurm/cluster.sh stands up 3 nodes on this machine): 32 envs as runners x envs per runner
  spread over the nodes, PPO training for a few iterations; env steps per second of each iteration's
  sampling time (time_sampling_s in progress.csv), the median of the iterations after the first.
Results: benchmarks/results/scaling.json and scaling_return_vs_time.png.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import REPO, timed_trainer_run, write_json

SLOW_CARTPOLE = f"{REPO / 'custom_gym_env' / 'custom_env.py'}:SlowCartPole"  # from any working directory

# One sampling measurement, in a fresh process (a fresh Ray): the project's spec and config, RLlib's runners.
SAMPLE_RLLIB = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
flags, runners, seconds = json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
from rlhpc.run.cli import build_parser
from rlhpc.run.spec import resolve
from rlhpc.algo import config as configs
from rlhpc.envs import sources as envs
spec = resolve(build_parser("").parse_args(flags))
envs.register_with_ray(spec.env.source, spec.env.probe)
config = configs.build_config(spec)
import ray
# Sleeping envs use no CPU: let Ray place more runners than this machine has cores.
ray.init(num_cpus=runners + 1, include_dashboard=False, logging_level="ERROR")
algo = configs.algorithm_class(spec.training.algo)(config=config)
per_call = spec.placement.num_envs_per_runner * 50  # 50 steps of every env per sample call

def sample():
    if runners == 0:
        return sum(len(e) for e in algo.env_runner.sample(num_timesteps=per_call))
    return sum(algo.env_runner_group.foreach_env_runner(
        lambda r: sum(len(e) for e in r.sample(num_timesteps=per_call)), local_env_runner=False))

sample()  # warm-up: sub-env processes, first inference
steps, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds:
    steps += sample()
print("RATE", steps / (time.perf_counter() - started), spec.placement.vectorize)
algo.stop()
'''

SAMPLE_SB3 = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
n, step_ms, cpu_ms, seconds = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv
from custom_env import SlowCartPole

if __name__ == "__main__":
    env = SubprocVecEnv([lambda: SlowCartPole({"step_ms": step_ms, "cpu_ms": cpu_ms}) for _ in range(n)])
    env.reset()
    actions = lambda: np.array([env.action_space.sample() for _ in range(n)])
    for _ in range(5):
        env.step(actions())
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        env.step(actions())
        steps += n
    print("RATE", steps / (time.perf_counter() - started))
    env.close()
'''

SOLVE_SB3 = r'''
import sys, time
started = float(sys.argv[1])
sys.path.insert(0, sys.argv[2])
n, step_ms, seed = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from custom_env import SlowCartPole

class StopAt(BaseCallback):  # the same criterion as the trainer: mean return of the last 100 episodes
    def _on_step(self):
        buf = self.model.ep_info_buffer
        if len(buf) >= 10 and np.mean([e["r"] for e in buf]) >= 195:
            print("SOLVED", time.time() - started, self.num_timesteps, flush=True)
            return False
        return True

if __name__ == "__main__":
    make = lambda: Monitor(SlowCartPole({"step_ms": step_ms}))
    env = (SubprocVecEnv if n > 1 else DummyVecEnv)([make] * n)
    lin = lambda v: (lambda progress: progress * v)
    # rl-zoo's CartPole hyperparameters, with n_envs x n_steps = 256 steps per update as there.
    model = PPO("MlpPolicy", env, n_steps=max(256 // n, 8), batch_size=256, gae_lambda=0.8, gamma=0.98,
                n_epochs=20, ent_coef=0.0, learning_rate=lin(0.001), clip_range=lin(0.2), seed=seed, device="cpu")
    model.learn(total_timesteps=300_000, callback=StopAt())
'''


def run_snippet(code: str, *args, timeout=600) -> list:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, check=False, cwd=REPO)
    for line in out.stdout.splitlines():
        if line.startswith(("RATE", "SOLVED")):
            return line.split()[1:]
    raise RuntimeError(out.stderr[-1500:])


def sampling_table(sizes, step_ms: float, cpu_ms: float, seconds: float, max_runners: int) -> list:
    env_config = ["--env-config", f"step_ms={step_ms}", "--env-config", f"cpu_ms={cpu_ms}"]
    step_s = (step_ms + cpu_ms) / 1000
    rows = []
    for n in sizes:
        ideal = n / step_s if not cpu_ms else min(n, os.cpu_count()) / step_s
        layouts = [("driver", 0, n)]
        if n > 1:
            runners = min(n, max_runners)
            layouts.append((f"{runners} remote runners", runners, n // runners))
        for where, runners, per_runner in layouts:
            flags = ["--name-env", SLOW_CARTPOLE, *env_config, "--num-cpus", str(runners),
                     "--num-envs-per-runner", str(per_runner)]
            rate, mode = run_snippet(SAMPLE_RLLIB, REPO, json.dumps(flags), runners, seconds)
            rows.append({"parallel_envs": n, "where": where, "vectorize": mode, "steps_per_s": float(rate),
                         "ideal": ideal, "efficiency": float(rate) / ideal})
            print(f"  {n:>3} envs  {where:<18} {mode:<6} {float(rate):>8,.0f} steps/s  ideal {ideal:>7,.0f}  "
                  f"efficiency {float(rate) / ideal:5.0%}", flush=True)
        try:
            sb3 = float(run_snippet(SAMPLE_SB3, REPO / "custom_gym_env", n, step_ms, cpu_ms, seconds)[0])
            rows.append({"parallel_envs": n, "where": "SB3 SubprocVecEnv, random actions", "steps_per_s": sb3,
                         "ideal": ideal, "efficiency": sb3 / ideal})
            print(f"  {n:>3} envs  {'SB3 SubprocVecEnv':<18} {'':<6} {sb3:>8,.0f} steps/s", flush=True)
        except RuntimeError as e:  # stable-baselines3 not installed: pip install -e '.[bench]'
            print(f"  SB3 skipped: {str(e).strip().splitlines()[-1]}", flush=True)
    return rows


def crossover(step_ms_values, envs: int, seconds: float) -> list:
    """Sync vs async sub-envs in the driver as the step cost grows: where --vectorize auto should switch."""
    rows = []
    for step_ms in step_ms_values:
        rates = {}
        for mode in ("sync", "async"):
            flags = ["--name-env", SLOW_CARTPOLE, "--env-config", f"step_ms={step_ms}", "--num-cpus", "0",
                     "--num-envs-per-runner", str(envs), "--vectorize", mode]
            rates[mode] = float(run_snippet(SAMPLE_RLLIB, REPO, json.dumps(flags), 0, seconds)[0])
        rows.append({"step_ms": step_ms, "envs": envs, **{f"{m}_steps_per_s": r for m, r in rates.items()}})
        print(f"  step_ms={step_ms:<5g} sync {rates['sync']:>7,.0f}  async {rates['async']:>7,.0f} steps/s", flush=True)
    return rows


def slurm_sampling(layouts, step_ms: float, nodes: int, cpus_per_node: int, iterations: int) -> list:
    """Sampling throughput of PPO runs submitted with slurm/multi_node_trainer.sh, one job per layout."""
    import csv
    import statistics

    rows = []
    for runners, per_runner in layouts:
        base = tempfile.mkdtemp(prefix="scaling_slurm_")
        venv = {"RLHPC_VENV": sys.prefix} if sys.prefix != sys.base_prefix else {}
        job = subprocess.run(
            ["sbatch", "--parsable", "--wait", f"--output={base}/slurm-%j.out", f"--nodes={nodes}",
             f"--cpus-per-task={cpus_per_node}", "--time=00:20:00", "slurm/multi_node_trainer.sh",
             "--name-env", SLOW_CARTPOLE, "--env-config", f"step_ms={step_ms}", "--num-cpus", str(runners),
             "--num-envs-per-runner", str(per_runner), "--stop-iters", str(iterations), "--stop-reward", "1e9",
             "--storage-path", base, "--name", "slurm"],
            cwd=REPO, env={**os.environ, **venv, "RLHPC_REQUEUE": "0"}, capture_output=True, text=True,
            check=False, timeout=1500)
        progress = sorted(p for p in (REPO / base).glob("slurm/*/progress.csv"))
        if job.returncode or not progress:
            raise RuntimeError(f"sbatch job for {runners} x {per_runner} failed: {job.stderr.strip()[-500:]} "
                               f"(log: {base})")
        with open(progress[0]) as f:
            iters = list(csv.DictReader(f))
        steps = [float(r["env_runners/num_env_steps_sampled"]) for r in iters]
        rates = [n / float(r["time_sampling_s"]) for n, r in zip(steps, iters, strict=True)][1:]
        rate, n = statistics.median(rates), runners * per_runner
        ideal = n / (step_ms / 1000)
        rows.append({"parallel_envs": n, "where": f"{runners} runners over {nodes} Slurm nodes", "runners": runners,
                     "envs_per_runner": per_runner, "vectorize": "async" if per_runner > 1 else "sync",
                     "steps_per_s": rate, "ideal": ideal, "efficiency": rate / ideal,
                     "iteration_rates": rates})
        print(f"  {n:>3} envs  {runners:>2} runners x {per_runner:<2} over {nodes} nodes {rate:>8,.0f} steps/s  "
              f"ideal {ideal:>7,.0f}  efficiency {rate / ideal:5.0%}", flush=True)
    return rows


def solve(sizes, step_ms: float, seed: int, timeout: float, figure_dir) -> dict:
    runs = {}
    storages = []
    for n in sizes:
        storage = tempfile.mkdtemp(prefix=f"scaling_{n}_")
        storages.append(os.path.join(storage, f"{n}_envs"))
        ours = timed_trainer_run("--name-env", SLOW_CARTPOLE, "--env-config", f"step_ms={step_ms}",
                                 "--num-envs-per-runner", n, "--stop-reward", 195, "--seed", seed,
                                 "--name", f"{n}_envs", reward=195, timeout=timeout, storage=storage)
        runs[f"rlhpc PPO, {n} env(s)"] = ours
        print(f"  rlhpc PPO  {n:>3} envs: {ours['solved_s'] or 'not reached'} s, {ours['env_steps']:,} steps",
              flush=True)
        try:
            seconds, steps = run_snippet(SOLVE_SB3, time.time(), REPO / "custom_gym_env", n, step_ms, seed,
                                         timeout=timeout)
            runs[f"SB3 PPO, {n} env(s)"] = {"solved_s": float(seconds), "env_steps": int(steps)}
            print(f"  SB3 PPO    {n:>3} envs: {float(seconds):.1f} s, {int(steps):,} steps", flush=True)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            runs[f"SB3 PPO, {n} env(s)"] = {"solved_s": None, "error": str(e)[-300:]}
    figure = os.path.join(figure_dir, "scaling_return_vs_time.png")
    subprocess.run([sys.executable, "-m", "rlhpc.compare", *storages, "--x", "time", "--out", figure, "--title",
                    f"PPO on SlowCartPole (step_ms={step_ms:g}): 1 env vs {sizes[-1]} envs"], cwd=REPO, check=False)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=["sampling", "solve", "crossover", "slurm"],
                        default=["sampling", "solve", "crossover"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32], help="parallel envs (sampling)")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 32], help="parallel envs (solve)")
    parser.add_argument("--step-ms", type=float, default=10.0, help="sampling: the sleeping step")
    parser.add_argument("--cpu-ms", type=float, default=1.0, help="sampling: the CPU-bound setting")
    parser.add_argument("--solve-step-ms", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="sampling time per measurement")
    parser.add_argument("--max-runners", type=int, default=8, help="remote env runners at most")
    parser.add_argument("--slurm-layouts", nargs="+", default=["4x8", "8x4", "16x2"],
                        help="slurm: env runners x envs per runner, one job each")
    parser.add_argument("--slurm-nodes", type=int, default=3)
    parser.add_argument("--slurm-cpus", type=int, default=12, help="slurm: CPUs per node the job asks for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900, help="per solve run, seconds")
    args = parser.parse_args()

    # Parts run separately add to one file: what an earlier run measured stays unless measured again.
    previous = REPO / "benchmarks" / "results" / "scaling.json"
    out = json.loads(previous.read_text()) if previous.exists() else {}
    out.pop("machine", None)
    out.setdefault("args", {}).update({part: vars(args) for part in args.parts})
    if "sampling" in args.parts:
        print(f"sampling, step_ms={args.step_ms:g} (sleeping):", flush=True)
        out["sampling_sleep"] = sampling_table(args.sizes, args.step_ms, 0.0, args.seconds, args.max_runners)
        print(f"sampling, cpu_ms={args.cpu_ms:g} (CPU-bound):", flush=True)
        out["sampling_cpu"] = sampling_table(args.sizes, 0.0, args.cpu_ms, args.seconds, args.max_runners)
    if "crossover" in args.parts:
        print("sync vs async sub-envs, 8 envs in the driver:", flush=True)
        out["crossover"] = crossover([0.0, 0.1, 0.3, 1.0, 3.0], 8, args.seconds)
    if "slurm" in args.parts:
        print(f"sampling through sbatch slurm/multi_node_trainer.sh, step_ms={args.step_ms:g}:", flush=True)
        layouts = [tuple(int(k) for k in layout.split("x")) for layout in args.slurm_layouts]
        out["sampling_slurm"] = slurm_sampling(layouts, args.step_ms, args.slurm_nodes, args.slurm_cpus, 5)
    if "solve" in args.parts:
        print(f"time to a 100-episode mean of 195, step_ms={args.solve_step_ms:g}:", flush=True)
        out["solve"] = solve(args.envs, args.solve_step_ms, args.seed, args.timeout, REPO / "benchmarks" / "results")
        one, many = (out["solve"].get(f"rlhpc PPO, {n} env(s)", {}).get("solved_s") for n in (args.envs[0],
                                                                                             args.envs[-1]))
        sb3 = out["solve"].get(f"SB3 PPO, {args.envs[-1]} env(s)", {}).get("solved_s")
        out["speedup"] = one / many if one and many else None
        out["ratio_to_sb3"] = many / sb3 if many and sb3 else None
        print(f"speed-up {args.envs[-1]} envs vs {args.envs[0]}: {out['speedup']}; ratio to SB3 at "
              f"{args.envs[-1]} envs: {out['ratio_to_sb3']}")
    print("written:", write_json("scaling", out))


if __name__ == "__main__":
    main()
