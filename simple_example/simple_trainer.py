"""Train an RLlib agent on a Gymnasium env: the tutorial's simple_trainer.py on today's Ray.

    python simple_example/simple_trainer.py                      # PPO on CartPole-v0, this machine
    python simple_example/simple_trainer.py --num-cpus 35         # 35 env runners on a 36-core node
    python simple_example/simple_trainer.py --run DQN --name-env CartPole-v1 --stop-iters 50
    python simple_example/simple_trainer.py --address $ip_head    # a running Ray cluster (see slurm/)

Results go to ~/ray_results/<name>/<trial>/progress.csv (and TensorBoard files beside it).
"""

import os
import sys

# Run as a script from anywhere: the shared helpers live in the repository's rlhpc/ package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlhpc.train.trainer import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
