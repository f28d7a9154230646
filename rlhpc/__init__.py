"""rlhpc: the code the trainers of this suite share.

The example scripts (simple_example/, simple_example_gpu/, custom_gym_env/) stay short and
read like the tutorial; flags, the Ray connection, the algorithm config, the run (Tune, or the
trainer's own process for one local trial), the return metric and the summary live here once.
"""

__version__ = "0.1.0"
