"""Per-algorithm (and a few per-env) defaults that learn fast: the one place they live.

RLlib's own defaults are safe but slow on small CPU allocations (PPO needs ~106 s for
CartPole-v1 on 2 cores, DQN samples ~30 env steps/s). These values were measured on a 2-core
machine (see benchmarks/README.md). They are applied before the user's `--set KEY=VALUE`, so
every key here can be overridden from the command line; keys are AlgorithmConfig attributes.
`--print-config` shows which were applied ("tuned_defaults").
"""

ALGO_DEFAULTS: dict[str, dict] = {
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
        # RLlib clamps each squared value error at 10, which zeroes the value net's gradient for
        # any return far from its estimate: Acrobot (returns of -100s) never reached -100 in 240 s
        # with the clamp and reaches it in 24-37 s without (3 seeds); CartPole is unchanged.
        "vf_clip_param": 10_000.0,
    },
    # RLlib's DQN steps one env per sample call and trains after every few steps; more envs
    # and a fixed replay ratio raise throughput ~7x.
    "DQN": {
        "num_envs_per_env_runner": 8,
        "rollout_fragment_length": 4,
        "training_intensity": 8,
    },
}

# On top of ALGO_DEFAULTS, per env, as rl-baselines3-zoo keeps its hyperparameters: some envs need
# a different horizon, and no one setting serves them all. An env named by file (path/to/file.py:Class)
# is found by its class.
ENV_DEFAULTS: dict[tuple[str, str], dict] = {
    # Pendulum pays -16..0 every step and never ends early: it needs the zoo's short horizon
    # (gamma 0.9, lambda 0.95). With gamma 0.99 it stays near random play (-977 after 90 s).
    ("PPO", "Pendulum-v1"): {
        "gamma": 0.9,
        "lambda_": 0.95,
        "train_batch_size_per_learner": 4000,
    },
    # Two agents, episodes of 3-20 steps: short iterations report often, and fewer epochs cost less per
    # iteration than they save in iterations (custom_gym_env/multi_agent_env.py; ~25 s to its optimum, measured).
    ("PPO", "RendezvousEnv"): {
        "train_batch_size_per_learner": 1000,
        "num_epochs": 6,
    },
}


def tuned_defaults(algo_name: str, env_name: str) -> dict:
    """The defaults for this algorithm on this env, per-env values last (they win)."""
    return {**ALGO_DEFAULTS.get(algo_name, {}), **ENV_DEFAULTS.get((algo_name, env_name), {})}
