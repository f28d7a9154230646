"""Start-up: command start -> first training iteration done (PPO, CartPole-v1, defaults).

    python benchmarks/startup.py --repeats 3
"""

import argparse

from _common import fmt, summary, timed_trainer_run, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=0)
    args = parser.parse_args()
    runs = [timed_trainer_run("--name-env", "CartPole-v1", "--stop-iters", 1, "--num-cpus", args.num_cpus)
            for _ in range(args.repeats)]
    first = summary(r["first_iteration_s"] for r in runs)
    total = summary(r["total_s"] for r in runs)
    print(f"first iteration done after {fmt(first)}; whole command (1 iteration, shutdown included) {fmt(total)}")
    print("written:", write_json("startup", {"runs": runs, "first_iteration": first, "total": total}))


if __name__ == "__main__":
    main()
