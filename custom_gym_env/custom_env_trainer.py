"""Train RLlib on your own Gymnasium env: the tutorial's custom_env_trainer.py on today's Ray.

The envs live in custom_env.py (and old_gym_api_env.py, written to the pre-Gymnasium API,
multi_agent_env.py, an RLlib MultiAgentEnv, and masked_env.py, an env with an action mask);
this script registers them under their class names and trains one with the same flags as
simple_example/simple_trainer.py:

    python custom_gym_env/custom_env_trainer.py                         # BasicEnv, PPO
    python custom_gym_env/custom_env_trainer.py --name-env SlipperyCorridorEnv --env-config length=20
    python custom_gym_env/custom_env_trainer.py --name-env OldGymCorridorEnv  # adapted, with a warning
    python custom_gym_env/custom_env_trainer.py --name-env SlowCartPole --env-config step_ms=10  # a slow simulator
    python custom_gym_env/custom_env_trainer.py --name-env RendezvousEnv  # two agents, one shared policy
    python custom_gym_env/custom_env_trainer.py --name-env MaskedDispatchEnv  # an action mask in the observation

By default training stops just under the env's known optimal return.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the shared rlhpc/ package

from custom_env import BasicEnv, SlipperyCorridorEnv, SlowCartPole
from masked_env import MaskedDispatchEnv
from multi_agent_env import RendezvousEnv
from old_gym_api_env import OldGymCorridorEnv

from rlhpc.train.trainer import main

# The names to give --name-env; each is registered with ray.tune.registry.register_env.
ENVS = {"BasicEnv": BasicEnv, "SlipperyCorridorEnv": SlipperyCorridorEnv, "OldGymCorridorEnv": OldGymCorridorEnv,
        "SlowCartPole": SlowCartPole, "RendezvousEnv": RendezvousEnv, "MaskedDispatchEnv": MaskedDispatchEnv}


def stop_reward(name, env_config):
    """The env's own threshold where it has one, else a little under the optimum: a policy that still explores
    rarely scores the optimum exactly."""
    env = ENVS.get(name)  # None for an env named by file or module (--name-env path/to/file.py:Class)
    threshold = getattr(env, "reward_threshold", None)
    if threshold is not None:
        return threshold(env_config)
    optimum = getattr(env, "optimal_return", None)
    return None if optimum is None else optimum(env_config) - 0.05


if __name__ == "__main__":
    sys.exit(main(description=__doc__, name_env="BasicEnv", envs=ENVS, stop_reward_for=stop_reward))
