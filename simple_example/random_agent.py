"""Sanity check before training: play an env with random actions and print every step.

The tutorial's first script, on the Gymnasium API: reset() returns (observation, info) and
step() returns (observation, reward, terminated, truncated, info) -- `done` is now split into
"the task ended" (terminated) and "we cut it off" (truncated, e.g. a time limit).

    python simple_example/random_agent.py --name-env CartPole-v1 --episodes 2
"""

import argparse

import gymnasium as gym

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--name-env", default="CartPole-v0", help="a Gymnasium env id")
parser.add_argument("--episodes", type=int, default=1)
parser.add_argument("--seed", type=int, default=None)
args = parser.parse_args()

try:
    env = gym.make(args.name_env)
except gym.error.Error as e:
    parser.exit(2, f"error: unknown env {args.name_env!r}: {e}\n")

env.action_space.seed(args.seed)
for episode in range(args.episodes):
    observation, info = env.reset(seed=None if args.seed is None else args.seed + episode)
    episode_return, done = 0.0, False
    while not done:
        action = env.action_space.sample()  # a random agent: no learning yet
        observation, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        episode_return += reward
        print(f"action={action} observation={observation} reward={reward} "
              f"terminated={terminated} truncated={truncated}")
    print(f"episode {episode} finished: return {episode_return}")
env.close()
