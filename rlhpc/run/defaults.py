"""Per-algorithm (and a few per-env) defaults that learn fast: the one place they live.

RLlib's own defaults are safe but slow on small CPU allocations (PPO needs ~106 s for
CartPole-v1 on 2 cores, DQN samples ~30 env steps/s). These values were measured on a 2-core
machine (see benchmarks/README.md). They are applied before the user's `--set KEY=VALUE`, so
every key here can be overridden from the command line; keys are AlgorithmConfig attributes.
`--print-config` shows which were applied ("tuned_defaults") and for which kind of env ("family").

Three layers, later ones win: per algorithm (ALGO_DEFAULTS), per kind of env (FAMILY_DEFAULTS: chosen from the
env's action space as probed before Ray starts, so a new simulator gets sound values without an entry of its own),
per env by name (ENV_DEFAULTS).
"""

# Kinds of env ("families"), from the action space(s) the probe found (env_family).
CONTINUOUS, DISCRETE = "continuous", "discrete"

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

# On top of ALGO_DEFAULTS, per kind of env. Discrete envs keep the algorithm's (measured on CartPole, Acrobot).
FAMILY_DEFAULTS: dict[tuple[str, str], dict] = {
    # Continuous actions (setpoints, torques): CleanRL's ppo_continuous_action values, which reach 1,443 on
    # HalfCheetah-v4 at 1 M steps (Open RL Benchmark, 3 seeds) where the CartPole values above ended at 404 (one
    # run, HalfCheetah-v5, 1 M steps, seed 1: `simple_example/simple_trainer.py --name-env HalfCheetah-v5
    # --stop-timesteps 1000000 --seed 1`). Observations are normalized too (--normalize-obs auto, rlhpc.run.spec).
    # With them (and the filter): 1,513 at 1 M steps (the same command), past CleanRL's 1,443 at 594 k steps;
    # InvertedPendulum-v5 at 1,000 from 170 k steps (seed 1). With the lr annealed as well (--anneal-lr auto), 1 M
    # steps: HalfCheetah-v5 3,211 (seed 1); Walker2d-v5 2,411 and Hopper-v5 1,800, means of seeds 1-3 (CleanRL:
    # 2,288 and 2,383; `benchmarks/continuous_control.py --envs Hopper-v5,Walker2d-v5`). benchmarks/README.md,
    # "Continuous control".
    ("PPO", CONTINUOUS): {
        "lr": 3e-4,  # CleanRL's (and SB3's); each value below is CleanRL's unless it says otherwise
        "gamma": 0.99,
        "lambda_": 0.95,
        "train_batch_size_per_learner": 2048,  # 8 envs x 256 steps (CleanRL: 1 env x 2048)
        "minibatch_size": 64,  # 32 minibatches x 10 epochs: 320 small steps per iteration, as CleanRL takes
        "num_epochs": 10,
        "clip_param": 0.2,  # RLlib's 0.3 is looser than the PPO paper's and CleanRL's 0.2
        "use_kl_loss": False,  # CleanRL has no KL penalty beside the clip (RLlib adds an adaptive one by default)
        "vf_loss_coeff": 0.5,
        "grad_clip": 0.5,  # CleanRL's max_grad_norm
        "entropy_coeff": 0.0,
        "model_config": {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"},
        # vf_clip_param stays PPO's 10,000 (ALGO_DEFAULTS): MuJoCo returns run to thousands.
        # And the lr falls linearly to 0 at --stop-timesteps (--anneal-lr auto, rlhpc.run.spec), as CleanRL's does:
        # with 3e-4 throughout, Hopper-v5 and Walker2d-v5 peaked near CleanRL's figures at ~500 k steps and fell
        # back (Hopper 2,553 -> 1,939 at 1 M, Walker2d 2,257 -> 983; seed 1); annealed, all three rose to the end:
        # HalfCheetah 3,211 (1,513 at 3e-4), Hopper 2,339, Walker2d 1,472 at 1 M (`--name-env Hopper-v5 --seed 1
        # --stop-timesteps 1000000`, 2026-12-03; benchmarks/README.md, "Continuous control").
        # Not here: reward scaling (--scale-rewards; on for the envs REWARDS_SCALED names, below: lower on
        # HalfCheetah) and a free action std (model_config.free_log_std: HalfCheetah 3 seeds 3,148 against 2,899;
        # scaled, Hopper-v5 2,015 against 2,796 (2 seeds), Walker2d-v5 3,703 against 3,331 (3 seeds, crossing);
        # benchmarks/README.md, "Seventh round" and "Eighth round"; an entry where it pays: InvertedPendulum-v5).
    },
}

# On top of ALGO_DEFAULTS and FAMILY_DEFAULTS, per env, as rl-baselines3-zoo keeps its hyperparameters: some envs need
# a different horizon, and no one setting serves them all. An env named by file (path/to/file.py:Class)
# is found by its class.
ENV_DEFAULTS: dict[tuple[str, str], dict] = {
    # Pendulum pays -16..0 every step and never ends early: it needs the zoo's short horizon
    # (gamma 0.9, lambda 0.95). With gamma 0.99 it stays near random play (-977 after 90 s).
    # It keeps PPO's values under its continuous family's (measured with them: 92-104 k steps to -250, 3 seeds,
    # benchmarks/results/time_to_solve_ppo_pendulum_v1.json): with the family's CleanRL values and normalized
    # observations seed 0 was still at -613 after 112 k steps (`--name-env Pendulum-v1 --stop-reward -400
    # --stop-timesteps 240000 --seed 0`, 2026-12-03, a loaded machine). So Pendulum trains as it did before families.
    ("PPO", "Pendulum-v1"): {
        "gamma": 0.9,
        "lambda_": 0.95,
        "train_batch_size_per_learner": 4000,
        "lr": 1e-3,
        "minibatch_size": 256,
        "clip_param": 0.3,
        "use_kl_loss": True,
        "vf_loss_coeff": 1.0,
        "grad_clip": None,
    },
    # InvertedPendulum is mastered by ~200 k steps and then, with the family's values, the action std (an output of
    # the network) keeps shrinking: entropy 1.4 -> -4..-8, the gradient norm from ~1 to 370-1,156, and by 1 M steps
    # seed 1 had collapsed to 231 (greedy play 153), seed 2 fell to 878, seed 3 held 1,000 (mean 703; CleanRL
    # 963). With the std a free parameter, as CleanRL's and SB3's, all three seeds held 1,000 from 200 k steps to
    # 1 M (`--name-env InvertedPendulum-v5 --seed N --stop-timesteps 1000000 --stop-reward 1e9 --set
    # model_config.free_log_std=true`, 2026-12-04, seed 3 with this entry; benchmarks/README.md, "Sixth round"); the
    # std shrank there too (entropy -5.9..-6.2), with gradient norms of at most 47-161. Not yet the family's: better
    # on the mean wherever measured (HalfCheetah-v5 3 seeds 2,899 -> 3,148, "Seventh round"; Hopper-v5 seed 2
    # 990 -> 2,529), but Hopper and Walker2d, scaled by name, have not been run with both.
    ("PPO", "InvertedPendulum-v5"): {
        "model_config": {**FAMILY_DEFAULTS[("PPO", CONTINUOUS)]["model_config"], "free_log_std": True},
    },
    # Two agents, episodes of 3-20 steps: short iterations report often, and fewer epochs cost less per
    # iteration than they save in iterations (custom_gym_env/multi_agent_env.py; ~25 s to its optimum, measured).
    ("PPO", "RendezvousEnv"): {
        "train_batch_size_per_learner": 1000,
        "num_epochs": 6,
    },
}


# Envs whose observations --normalize-obs auto leaves alone although their family would normalize them, by name.
OBSERVATIONS_AS_THEY_ARE: dict[str, str] = {
    # Already in [-8, 8] and learned with raw observations: with the filter (and the values above) seed 0 was at
    # -698 after 164 k steps (`--name-env Pendulum-v1 --stop-reward -400 --stop-timesteps 240000 --seed 0 --set
    # lr=0.001 --set minibatch_size=256 --set clip_param=0.3 --set use_kl_loss=true --set vf_loss_coeff=1.0 --set
    # grad_clip=1e9`, 2026-12-03, a loaded machine) where without it 3 seeds reached -250 in 92-104 k steps.
    "Pendulum-v1": "its observations are already within [-8, 8] and it learns slower normalized",
}

# Envs whose rewards --scale-rewards auto scales (PPO, one learner); for every other env it stays off. Measured at 1 M
# steps with the continuous family's values (benchmarks/README.md, "Fifth round"; `simple_example/simple_trainer.py
# --name-env ENV --seed N --stop-timesteps 1000000 --stop-reward 1e9 --scale-rewards on`, 2026-12-03): it pays on
# every seed where an episode ends when the robot falls; where every episode runs its full length, as in most of our
# users' simulators (a day of a building, a week of a grid) and HalfCheetah, it did not: HalfCheetah-v5 seeds 1-3
# end at 1,637 / 1,697 / 2,787 scaled (mean 2,040) against 3,211 / 1,438 / 4,047 without (mean 2,899). So not a
# family default: a named env, or --scale-rewards on.
REWARDS_SCALED: dict[str, str] = {
    # Seeds 1-3: 2,738 / 2,854 / 1,995 (mean 2,529) against 2,339 / 990 / 2,072 (mean 1,800); CleanRL 2,383.
    "Hopper-v5": "its episodes end when it falls, and 3 seeds end at 2,529 scaled against 1,800",
    # Seeds 1-3: 2,569 / 3,218 / 4,207 (mean 3,331, all still rising) against 1,472 / 2,918 / 2,843 (mean 2,411);
    # CleanRL 2,288, RLlib's target 3,500.
    "Walker2d-v5": "its episodes end when it falls, and 3 seeds end at 3,331 scaled against 2,411",
}


def env_family(probe) -> tuple:
    """-> (family, why) from the env's action space (every agent's, for a multi-agent env): CONTINUOUS when all are
    Box, else DISCRETE. `probe` is rlhpc.envs.sources.Probe."""
    import gymnasium

    spaces = [act for _, act in probe.agent_spaces.values()] if probe.agent_spaces is not None \
        else [probe.action_space]
    if spaces and all(isinstance(space, gymnasium.spaces.Box) for space in spaces):
        return CONTINUOUS, "Box actions"
    kinds = sorted({type(space).__name__ for space in spaces if not isinstance(space, gymnasium.spaces.Box)})
    return DISCRETE, f"{', '.join(kinds) or 'no'} actions"


def env_entry(algo_name: str, env_name: str) -> dict:
    """What this env's own entry (ENV_DEFAULTS) sets over its family's, for the first lines; {} for most envs."""
    return ENV_DEFAULTS.get((algo_name, env_name), {})


def tuned_defaults(algo_name: str, env_name: str, family: str = DISCRETE) -> dict:
    """The defaults for this algorithm on this kind of env and this env, per-env values last (they win)."""
    return {**ALGO_DEFAULTS.get(algo_name, {}), **FAMILY_DEFAULTS.get((algo_name, family), {}),
            **env_entry(algo_name, env_name)}
