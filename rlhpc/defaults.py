"""Per-algorithm defaults that learn fast: the one place they live.

RLlib's own defaults are safe but slow on small CPU allocations (PPO needs ~106 s for
CartPole-v1 on 2 cores, DQN samples ~30 env steps/s). These values were measured on a 2-core
machine (see benchmarks/README.md). They are applied before the user's `--set KEY=VALUE`, so
every key here can be overridden from the command line; keys are AlgorithmConfig attributes.
"""

ALGO_DEFAULTS = {
    # Vectorized envs in the sampling process and a mid-size batch: PPO learns CartPole in a
    # few dozen iterations and each iteration is cheap enough to report progress often. A 64x64
    # net (SB3's size) samples and learns ~1.5x faster than RLlib's 256x256 and, with lr 1e-3,
    # needs no more steps: CartPole-v1 to a 100-episode mean of 450 after 26 s median (3 seeds)
    # against 41 s (seed 0) with 256x256 and lr 3e-4. Override with --set model_config.fcnet_hiddens=[...].
    "PPO": {
        "num_envs_per_env_runner": 8,
        "train_batch_size_per_learner": 2000,
        "minibatch_size": 256,
        "num_epochs": 10,
        "lr": 1e-3,
        "model_config": {"fcnet_hiddens": [64, 64]},
    },
    # RLlib's DQN steps one env per sample call and trains after every few steps; more envs
    # and a fixed replay ratio raise throughput ~7x.
    "DQN": {
        "num_envs_per_env_runner": 8,
        "rollout_fragment_length": 4,
        "training_intensity": 8,
    },
}
