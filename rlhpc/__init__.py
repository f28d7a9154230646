"""rlhpc: the code the trainers of this suite share.

The example scripts (simple_example/, simple_example_gpu/, custom_gym_env/) stay short and
read like the tutorial; a run's data flows one way through this package: flags (cli) -> one
resolved run spec (spec) -> env (envs) -> config (config) -> backend (inprocess or tune_run)
-> report (report). README.md's "Where things live" says what each module does.
"""

__version__ = "0.1.0"
