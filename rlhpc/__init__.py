"""rlhpc: the code the trainers of this suite share, one subpackage per stage of a run.

The example scripts (simple_example/, simple_example_gpu/, custom_gym_env/) stay short and
read like the tutorial; a run's data flows one way through this package: flags -> one resolved
run spec (run) -> env (envs) -> RLlib config (algo) -> backend (train) -> report (outputs);
slurm holds the job side. README.md's "Where things live" says what each part does.
"""

__version__ = "0.1.0"
