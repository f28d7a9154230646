"""Does an env have a learning-rate schedule for PBT to find? Constant rates against the same rates falling to 0.

    python benchmarks/lr_schedule.py --env Pendulum-v1 --steps 150000 --rates 1e-3,3e-3,1e-2     # PBT's case
    python benchmarks/lr_schedule.py --env CartPole-v1 --steps 50000 --rates 1e-3,3e-3           # no schedule there

Each run is the trainer from a cold process, sampling in the driver, with `--set lr=RATE` and `--anneal-lr off`
(constant) or `on` (falling linearly to 0 at --steps), to --steps env steps (a --stop-reward out of reach), for each
seed. Measured: the final 100-episode mean. A case has a schedule to find when the best falling rate ends clearly
above the best constant, against the seeds' spread (benchmarks/README.md, "Search"). Runs already in the results
file (benchmarks/results/<env>_lr_schedule.json) are not run again, so an interrupted check goes on where it stopped.
"""

import argparse
import json
import statistics

from _common import REPO, timed_trainer_run, write_json


def run(env: str, steps: int, lr: float, anneal: bool, seed: int) -> dict:
    out = timed_trainer_run("--name-env", env, "--num-cpus", 0, "--seed", seed, "--stop-timesteps", steps,
                            "--stop-reward", "1e9", "--set", f"lr={lr:g}", "--anneal-lr", "on" if anneal else "off",
                            timeout=7200)
    return {"setting": ("anneal" if anneal else "const") + f"{lr:g}", "lr": lr, "anneal_lr": anneal, "seed": seed,
            "final_return_100": out["last_return"], "env_steps": out["env_steps"], "wall_s": out["total_s"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--rates", default="1e-3,3e-3,1e-2", help="comma-separated learning rates")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    name = f"{args.env.replace('-', '_').lower()}_lr_schedule"
    try:
        rows = json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text())["rows"]
    except (OSError, ValueError):
        rows = []
    command = (f"python simple_example/simple_trainer.py --name-env {args.env} --num-cpus 0 --seed SEED "
               f"--stop-timesteps {args.steps} --stop-reward 1e9 --set lr=LR --anneal-lr on|off")
    for seed in seeds:
        for lr in rates:
            for anneal in (False, True):
                if any((r["lr"], r["anneal_lr"], r["seed"]) == (lr, anneal, seed) for r in rows):
                    continue
                rows.append(run(args.env, args.steps, lr, anneal, seed))
                print(rows[-1], flush=True)
                write_json(name, {"command": command, "rows": rows})
    print("| lr | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for anneal in (False, True):
        for lr in rates:
            got = {r["seed"]: r["final_return_100"] for r in rows if (r["lr"], r["anneal_lr"]) == (lr, anneal)}
            values = [got[s] for s in seeds if got.get(s) is not None]
            if values:
                print(f"| {lr:g} {'falling to 0' if anneal else 'constant'} | "
                      + " | ".join(f"{got[s]:.1f}" if got.get(s) is not None else "-" for s in seeds)
                      + f" | {statistics.mean(values):.1f} | {max(values) - min(values):.1f} |")


if __name__ == "__main__":
    main()
