"""Per-algorithm defaults that learn fast: the one place they live.

RLlib's own defaults are safe but slow on small CPU allocations (PPO needs ~106 s for
CartPole-v1 on 2 cores, DQN samples ~30 env steps/s). These values were measured on a 2-core
machine (see benchmarks/README.md). They are applied before the user's `--set KEY=VALUE`, so
every key here can be overridden from the command line; keys are AlgorithmConfig attributes.
"""

ALGO_DEFAULTS = {
    # Vectorized envs in the sampling process and a mid-size batch: PPO learns CartPole in a
    # few dozen iterations and each iteration is cheap enough to report progress often.
    "PPO": {
        "num_envs_per_env_runner": 8,
        "train_batch_size_per_learner": 2000,
        "minibatch_size": 256,
        "num_epochs": 10,
        "lr": 3e-4,
    },
    # RLlib's DQN steps one env per sample call and trains after every few steps; more envs
    # and a fixed replay ratio raise throughput ~7x.
    "DQN": {
        "num_envs_per_env_runner": 8,
        "rollout_fragment_length": 4,
        "training_intensity": 8,
    },
}
