"""Simulators from PyPI through the trainer's defaults: does each build, train and play back, and how fast.

    pip install -e '.[envs,bench]'            # PettingZoo + MPE, highway-env; gymnasium[mujoco]
    python benchmarks/real_envs.py            # every row; --only NAME runs one again; --steps-scale 0.25: quick

For each env: the trainer runs --stop-timesteps N from a cold process (what its first lines said about the env is
kept), env steps per second over its training time, the 100-episode return after N steps against a random
policy's (the same env built by rlhpc.envs.sources, random actions, 20 episodes), and whether
`python -m rlhpc.evaluate` plays the trained policy. The "exercises" column says which part of the suite the
row is there for. Results: a table on stdout and benchmarks/results/real_envs.json.
"""

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, TRAINER, write_json

sys.path.insert(0, str(REPO))

# name, --name-env, extra trainer flags, env steps, what it exercises
ENVS = [
    ("Hopper", "Hopper-v5", (), 40_000, "MuJoCo (gymnasium[mujoco]): continuous actions, observations of mixed scales"),
    ("highway", "highway_env:highway-fast-v0", ("--num-envs-per-runner", 4), 4_000,
     "highway-env: a 2-D observation (vehicles x features) flattened; a slow step (async sub-envs)"),
    ("MPE spread", "mpe2:simple_spread_v3", (), 20_000, "PettingZoo Parallel env by name, 3 agents, shared policy"),
    ("tic-tac-toe", "pettingzoo.classic:tictactoe_v3", (), 20_000,
     "PettingZoo AEC (turn-based) env by name; an action mask in a Dict observation"),
    ("Grid2Op case14", "custom_gym_env/grid2op_env.py:Grid2OpEnv", (), 4_000,
     "a real power grid (Grid2Op + pandapower, pip install grid2op): 26-240 ms steps, classes made per process"),
]
RANDOM_EPISODES = 20
RESULTS = REPO / "benchmarks" / "results" / "real_envs.json"


def random_return(name_env: str, episodes: int = RANDOM_EPISODES) -> float:
    """The mean episode return of uniformly random actions (summed over agents for a multi-agent env)."""
    from rlhpc.envs import sources
    from rlhpc.envs.gym_compat import is_multi_agent

    source, creator = sources.find(name_env)
    env = sources.make(source, creator, {}) if creator is None else creator({})
    totals = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            if is_multi_agent(env):
                action = {}
                for agent, agent_obs in obs.items():
                    space = env.get_action_space(agent)
                    mask = agent_obs.get("action_mask") if isinstance(agent_obs, dict) else None
                    action[agent] = int(space.sample(mask=mask.astype("int8"))) if mask is not None else space.sample()
                obs, rewards, terminated, truncated, _ = env.step(action)
                total += sum(rewards.values())
                done = terminated.get("__all__", False) or truncated.get("__all__", False)
            else:
                obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
        totals.append(total)
    env.close()
    return sum(totals) / len(totals)


def trained(name_env: str, flags, steps: int, storage: str) -> dict:
    out = subprocess.run([sys.executable, str(TRAINER), "--name-env", name_env, "--stop-timesteps", str(steps),
                          "--storage-path", storage, *map(str, flags)], capture_output=True, text=True,
                         timeout=3600, cwd=REPO, check=False)
    said = [line for line in out.stdout.splitlines() if line.startswith(("observation", "action mask", "policies"))]
    summary = re.search(r"return=(\S+)\s+iterations=\d+\s+env_steps=([\d,]+)\s+train_time=([\d.]+)s\s+"
                        r"wall_time=([\d.]+)s", out.stdout)
    if out.returncode != 0 or not summary:
        return {"exit_code": out.returncode, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    ret, env_steps, train_s, wall_s = summary.groups()
    env_steps = int(env_steps.replace(",", ""))
    played = subprocess.run([sys.executable, "-m", "rlhpc.evaluate", str(next(Path(storage).iterdir())),
                             "--episodes", "3", "--seed", "0"], capture_output=True, text=True, timeout=600,
                            cwd=REPO, check=False)
    return {"exit_code": 0, "said": said, "return": None if ret == "-" else float(ret), "env_steps": env_steps,
            "steps_per_s": env_steps / float(train_s), "wall_s": float(wall_s), "evaluate_ok": played.returncode == 0,
            "evaluate_error": None if played.returncode == 0 else played.stderr.strip().splitlines()[-1:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="one row, by its name (Hopper, highway, ...)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every row's env steps")
    args = parser.parse_args()
    rows = []
    for name, name_env, flags, steps, exercises in ENVS:
        if args.only and args.only.lower() != name.lower():
            continue
        with tempfile.TemporaryDirectory() as storage:
            result = trained(name_env, flags, max(1000, int(steps * args.steps_scale)), storage)
        result.update(name=name, env=name_env, exercises=exercises, random_return=random_return(name_env))
        rows.append(result)
        print(line(result), flush=True)
    if args.only:  # one row run again: the others stay as measured
        kept = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
        rows = [row if row["name"] != rows[0]["name"] else rows[0] for row in kept] + \
            [row for row in rows if row["name"] not in {k["name"] for k in kept}]
    write_json("real_envs", {"rows": rows})


def line(row: dict) -> str:
    if row["exit_code"] != 0:
        return f"| {row['name']} | `{row['env']}` | failed: {row['error']} | | | | {row['exercises']} |"
    ret = "-" if row["return"] is None or math.isnan(row["return"]) else f"{row['return']:.1f}"
    return (f"| {row['name']} | `{row['env']}` | {row['env_steps']:,} steps, {row['steps_per_s']:,.0f} steps/s | "
            f"{ret} vs random {row['random_return']:.1f} | {'yes' if row['evaluate_ok'] else 'NO'} | "
            f"{'; '.join(row['said']) or '-'} | {row['exercises']} |")


if __name__ == "__main__":
    main()
