"""Which RLlib algorithm a name means, and which config keys say where a run's work goes rather than what it learns.

Resolved before Ray starts (a typo costs a second, not a queue wait); RLlib's registry is read by name only.
"""

from rlhpc.errors import UserError

# The tutorial trained A2C; RLlib dropped it (and A3C) in Ray 2.x.
REMOVED_ALGORITHMS = {
    "A2C": "A2C was removed from RLlib (Ray 2.x); use PPO, its synchronous successor (--run PPO)",
    "A3C": "A3C was removed from RLlib (Ray 2.x); use APPO or IMPALA, the asynchronous replacements (--run APPO)",
}


def resolve_algorithm(name: str) -> str:
    """'ppo' -> 'PPO'; unknown or removed names are one clear line."""
    from ray.rllib.algorithms.registry import ALGORITHMS

    if name.upper() in REMOVED_ALGORITHMS:
        raise UserError(REMOVED_ALGORITHMS[name.upper()])
    by_lower = {known.lower(): known for known in ALGORITHMS}
    canonical = by_lower.get(name.lower())
    if canonical is None:
        raise UserError(f"unknown algorithm {name!r}; RLlib 2.60 has: {', '.join(sorted(ALGORITHMS))}")
    return canonical


# Where a run's work goes, not what it learns: what an elastic --resume takes from the new command line
# (rlhpc.run.resume, rlhpc.train.tune_run.ElasticResume).
PLACEMENT_KEYS = ("num_env_runners", "num_envs_per_env_runner", "num_cpus_per_env_runner", "num_gpus_per_env_runner",
                  "custom_resources_per_env_runner", "gym_env_vectorize_mode", "num_learners", "num_cpus_per_learner",
                  "num_gpus_per_learner", "custom_resources_per_learner", "num_gpus", "num_cpus_for_main_process")
