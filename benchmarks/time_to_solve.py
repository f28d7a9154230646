"""Time to solve CartPole-v1 (mean return >= 450) from a cold process, this project vs SB3.

    python benchmarks/time_to_solve.py --seeds 3             # PPO and DQN defaults, and SB3 PPO
    python benchmarks/time_to_solve.py --algos PPO --no-sb3
    python benchmarks/time_to_solve.py --algos PPO --env Acrobot-v1 --reward -100 --no-sb3

Each run is a new process: imports, Ray start-up and the first iteration are all counted, as a
user would count them. SB3 (pip install -e '.[bench]') uses the rl-baselines3-zoo CartPole-v1
hyperparameters; its clock also starts at process start.
"""

import argparse
import subprocess
import sys
import time

from _common import fmt, summary, timed_trainer_run, write_json

SB3_ZOO_CARTPOLE = r'''
import time, sys
started = float(sys.argv[2])
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

class StopAt(BaseCallback):  # the same smoothing as RLlib: mean return of the last 100 episodes
    def _on_step(self):
        buf = self.model.ep_info_buffer
        if len(buf) >= 10 and np.mean([e["r"] for e in buf]) >= 450:
            print("SOLVED", time.time() - started, self.num_timesteps, flush=True)
            return False
        return True

lin = lambda v: (lambda progress: progress * v)
env = make_vec_env("CartPole-v1", n_envs=8, seed=int(sys.argv[1]))
model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
            ent_coef=0.0, learning_rate=lin(0.001), clip_range=lin(0.2), seed=int(sys.argv[1]), device="cpu")
model.learn(total_timesteps=200_000, callback=StopAt())
'''


def sb3_run(seed: int) -> dict:
    started = time.time()
    out = subprocess.run([sys.executable, "-c", SB3_ZOO_CARTPOLE, str(seed), str(started)], capture_output=True,
                         text=True, timeout=900, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("SOLVED"):
            _, seconds, steps = line.split()
            return {"solved_s": float(seconds), "env_steps": int(steps)}
    return {"solved_s": None, "env_steps": None, "error": out.stderr[-500:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--algos", nargs="+", default=["PPO", "DQN"])
    parser.add_argument("--no-sb3", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    parser.add_argument("--env", default="CartPole-v1", help="SB3's run is CartPole-v1 only")
    parser.add_argument("--reward", type=float, default=450, help="mean return of the last 100 episodes")
    args = parser.parse_args()

    runs = {}
    for algo in args.algos:
        runs[algo] = [timed_trainer_run("--run", algo, "--name-env", args.env, "--stop-reward", args.reward,
                                        "--seed", seed, reward=args.reward, timeout=args.timeout)
                      for seed in range(args.seeds)]
    if not args.no_sb3 and args.env == "CartPole-v1" and args.reward == 450:
        runs["SB3 PPO (zoo)"] = [sb3_run(seed) for seed in range(args.seeds)]

    stats = {name: summary(r["solved_s"] for r in rs) for name, rs in runs.items()}
    print(f"{'trainer':<16} {f'time to mean return {args.reward:g} (median, range)':<42} env steps (median)")
    for name, rs in runs.items():
        steps = summary(r["env_steps"] for r in rs if r.get("solved_s"))
        print(f"{name:<16} {fmt(stats[name]):<42} {steps['median'] or '-'}")
    sb3 = stats.get("SB3 PPO (zoo)", {}).get("median")
    ratios = {name: s["median"] / sb3 for name, s in stats.items() if sb3 and s["median"] and name != "SB3 PPO (zoo)"}
    for name, ratio in ratios.items():
        print(f"ratio {name} / SB3 PPO: {ratio:.2f}")
    name = "time_to_solve_" + "_".join(a.lower() for a in args.algos) + (
        "" if args.env == "CartPole-v1" else "_" + args.env.lower().replace("-", "_"))
    print("written:", write_json(name, {"env": args.env, "reward": args.reward, "runs": runs, "stats": stats,
                                        "ratio_to_sb3": ratios}))


if __name__ == "__main__":
    main()
