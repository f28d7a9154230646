"""Train with the learner on GPU(s) and rollouts on CPUs: the tutorial's GPU trainer on today's Ray.

Sampling (env runners) is CPU work and scales with nodes; the gradient updates are GPU work.
`--num-gpus` decides where the learner runs, as in RLlib's scaling guide:

    --num-gpus 1      one learner on one GPU (a fraction, e.g. 0.5, shares a GPU)
    --num-gpus 4      four learners, one GPU each, updates averaged across them
    --num-gpus 0      the learner on CPU (for trying the job out on a machine without GPUs)

    python simple_example_gpu/simple_trainer.py --num-cpus 35 --num-gpus 1
    python simple_example_gpu/simple_trainer.py --num-gpus 2 --print-config   # check the mapping first

Before training, the trainer checks that the cluster has the GPUs and that PyTorch sees CUDA there.
"""

import os
import sys

# Run as a script from anywhere: the shared helpers live in the repository's rlhpc/ package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlhpc.train.trainer import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__, num_gpus=1.0))
