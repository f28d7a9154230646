"""Defaults by kind of env (rlhpc/run/defaults.py: FAMILY_DEFAULTS) and --normalize-obs, in this process: which
family a continuous and a discrete env get, what --print-config says, that per-env entries and --set still win, and
the observation pipeline RLlib is given (flattening first, then the normalizer). The normalizer saved in a checkpoint
and played by rlhpc.evaluate: tests/test_normalization.py."""

import json

import pytest
from conftest import REPO, one_error_line

from rlhpc.run import cli

RENDEZVOUS = str(REPO / "custom_gym_env/multi_agent_env.py:RendezvousEnv")


def printed(trainer, *argv) -> dict:
    code, out, err = trainer(*argv, "--print-config")
    assert code == 0, err
    return json.loads(out)


def test_continuous_actions_get_the_continuous_family_and_set_wins(trainer):
    shown = printed(trainer, "--name-env", "MountainCarContinuous-v0", "--set", "num_epochs=4", "--stop-timesteps",
                    50_000)
    summary, config = shown["summary"], shown["config"]
    assert summary["family"] == "continuous (Box actions)"
    assert summary["normalize_observations"] == "on (auto: on for continuous actions)"
    assert summary["tuned_defaults"]["lr"] == 3e-4 and summary["tuned_defaults"]["num_epochs"] == 10
    # --anneal-lr auto: the family's lr falls linearly to 0 at --stop-timesteps (RLlib's [[step, value], ...])
    assert summary["anneal_lr"] == "annealed to 0 at 50,000 env steps (auto: on for continuous actions)"
    assert config["lr"] == [[0, 3e-4], [50_000, 0.0]]
    assert (config["lambda"], config["minibatch_size"], config["clip_param"]) == (0.95, 64, 0.2)
    assert config["grad_clip"] == 0.5 and config["use_kl_loss"] is False and config["vf_clip_param"] == 10_000
    assert config["num_epochs"] == 4  # --set beats the family's 10
    assert summary["scale_rewards"] == "off (auto: off; on only for the envs rlhpc/run/defaults.py names)"
    assert summary["train_batch_size_per_learner"] == 2048
    assert shown["spec"]["family"] == "continuous" and shown["spec"]["normalize_observations"] is True


def test_rewards_are_scaled_for_the_envs_measured_to_gain(trainer):
    """--scale-rewards auto: on by name only (rlhpc.run.defaults.REWARDS_SCALED: Hopper-v5 gained on 2 of 3 seeds,
    HalfCheetah-v5 lost on 2 seeds of 3), and off where it cannot work even for those."""
    pytest.importorskip("mujoco")
    assert printed(trainer, "--name-env", "Hopper-v5")["summary"]["scale_rewards"].startswith(
        "on (auto: on for Hopper-v5: its episodes end when it falls")
    assert printed(trainer, "--name-env", "HalfCheetah-v5")["summary"]["scale_rewards"] == (
        "off (auto: off; on only for the envs rlhpc/run/defaults.py names)")
    assert printed(trainer, "--name-env", "Hopper-v5", "--run", "SAC")["summary"]["scale_rewards"] == (
        "off (auto: off, it is for PPO (its learner scales the rewards), not SAC)")


def test_a_family_value_can_be_set_back_to_rllibs_none(trainer):
    config = printed(trainer, "--name-env", "MountainCarContinuous-v0", "--set", "grad_clip=null")["config"]
    assert config["grad_clip"] is None  # no clipping, RLlib's own default


def test_discrete_actions_keep_the_algorithm_defaults(trainer):
    shown = printed(trainer, "--name-env", "CartPole-v1", "--stop-timesteps", 50_000)
    summary, config = shown["summary"], shown["config"]
    assert summary["family"] == "discrete (Discrete actions)" and summary["env_entry"] == []
    assert summary["normalize_observations"] == "off (auto: off for discrete actions)"
    assert summary["anneal_lr"] == "constant (auto: off for discrete actions)"
    assert summary["scale_rewards"] == "off (auto: off; on only for the envs rlhpc/run/defaults.py names)"
    assert (config["lr"], config["minibatch_size"], config["clip_param"]) == (1e-3, 256, 0.3)
    assert "grad_clip" not in summary["tuned_defaults"]


def test_a_per_env_entry_wins_over_its_family(trainer):
    shown = printed(trainer, "--name-env", "Pendulum-v1")
    summary, config = shown["summary"], shown["config"]
    assert summary["family"] == "continuous (Box actions)"
    assert config["gamma"] == 0.9 and config["lr"] == 1e-3  # ENV_DEFAULTS, over the family's 0.99 and 3e-4
    assert config["grad_clip"] is None  # set back to RLlib's own by the env's entry
    assert summary["normalize_observations"].startswith("off (auto: off for Pendulum-v1: ")
    assert "gamma" in summary["env_entry"] and "lambda_" in summary["env_entry"]  # what the run's first lines name


def test_a_per_env_model_entry_keeps_the_familys_network(trainer):
    """InvertedPendulum-v5's entry frees the action std; the family's network size and activation stay."""
    pytest.importorskip("mujoco")
    shown = printed(trainer, "--name-env", "InvertedPendulum-v5")
    model = shown["config"]["_model_config"]
    assert shown["summary"]["env_entry"] == ["model_config"]
    assert model["free_log_std"] is True and model["fcnet_hiddens"] == [64, 64] and model["fcnet_activation"] == "tanh"


def pipeline(*argv) -> list:
    """The env-to-module pieces the trainer gives RLlib (before RLlib's own), by class name."""
    return [type(piece).__name__ for piece in pipeline_pieces(*argv)]


def pipeline_pieces(*argv) -> list:
    from rlhpc.algo.config import build_config
    from rlhpc.run.spec import resolve

    spec = resolve(cli.build_parser("").parse_args([str(a) for a in argv]))
    connector = build_config(spec)._env_to_module_connector
    if connector is None:
        return []
    pieces = connector(None, None, None)
    return pieces if isinstance(pieces, list) else [pieces]


def test_scaled_rewards_train_with_the_learner_that_scales_them(trainer, monkeypatch, tmp_path):
    """--scale-rewards on: RLlib's PPO learner with the scaler first in its connector (rlhpc.algo.reward_scaling;
    the scaling itself: tests/unit/test_reward_scaling.py)."""
    from rlhpc.algo.config import build_config
    from rlhpc.run.spec import resolve

    flags = ["--name-env", "MountainCarContinuous-v0", "--scale-rewards", "on"]
    assert printed(trainer, *flags)["summary"]["scale_rewards"] == "on (--scale-rewards on)"
    monkeypatch.setenv("HOME", str(tmp_path))
    config = build_config(resolve(cli.build_parser("").parse_args(flags)))
    assert config.learner_class.__name__ == "RewardScalingPPOLearner"


def test_the_normalizer_comes_after_the_flattening(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pipeline("--name-env", "MountainCarContinuous-v0") == ["MeanStdFilter"]
    assert pipeline("--name-env", "MountainCarContinuous-v0", "--normalize-obs", "off") == []
    assert pipeline("--name-env", "CartPole-v1") == []
    # Discrete observations are one-hot first: the filter sees what the network sees.
    assert pipeline("--name-env", "FrozenLake-v1", "--normalize-obs", "on") == ["FlattenObservations",
                                                                                  "MeanStdFilter"]


@pytest.mark.parametrize("args, message", [
    (["--name-env", str(REPO / "custom_gym_env/masked_env.py:MaskedDispatchEnv"), "--normalize-obs", "on"],
     "error: --normalize-obs on: its observations carry an action mask"),
    (["--name-env", "CartPole-v1", "--anneal-lr", "on"],
     "error: --anneal-lr on: the lr falls to 0 at --stop-timesteps: give --stop-timesteps N"),
    (["--name-env", "CartPole-v1", "--run", "DQN", "--scale-rewards", "on"],
     "error: --scale-rewards on: it is for PPO (its learner scales the rewards), not DQN"),
    (["--name-env", "Pendulum-v1", "--num-gpus", "2", "--scale-rewards", "on"],
     "error: --scale-rewards on: it works with one learner: --num-gpus 2 makes 2"),
])
def test_normalization_or_annealing_where_it_cannot_work_is_one_line(trainer, args, message):
    code, _, err = trainer(*args, "--stop-iters", 1)
    assert code == 2
    assert one_error_line(err).startswith(message)


def test_a_multi_agent_env_gets_statistics_per_agent(trainer, monkeypatch, tmp_path):
    """RendezvousEnv acts in Discrete: auto leaves it as it is, as for one agent; asked, each agent gets its own
    statistics (RLlib's MeanStdFilter keyed by agent id), after the per-agent flattening. The run end to end, with
    evaluate: tests/test_third_party_envs.py (mpe2's simple_spread with continuous actions)."""
    summary = printed(trainer, "--name-env", RENDEZVOUS)["summary"]
    assert summary["normalize_observations"] == "off (auto: off for discrete actions)"
    monkeypatch.setenv("HOME", str(tmp_path))
    *_, normalizer = pipeline_pieces("--name-env", RENDEZVOUS, "--normalize-obs", "on")
    assert type(normalizer).__name__ == "MeanStdFilter" and normalizer._multi_agent


def test_the_first_lines_say_a_shared_reason_once(monkeypatch, tmp_path):
    """report.family_settings: the normalizer, the lr schedule and reward scaling (when on), each with why; a reason
    they share said once."""
    from rlhpc.outputs.report import family_settings
    from rlhpc.run.spec import resolve

    monkeypatch.setenv("HOME", str(tmp_path))

    def said(*argv):
        return family_settings(resolve(cli.build_parser("").parse_args([str(a) for a in argv])))

    continuous = ["--name-env", "MountainCarContinuous-v0", "--stop-timesteps", 50000]
    assert said(*continuous) == ("observations normalized: yes, lr annealed to 0 at 50,000 env steps "
                                 "(auto: on for continuous actions)")
    assert said(*continuous, "--normalize-obs", "off") == ("observations normalized: no (--normalize-obs off); lr "
                                                           "annealed to 0 at 50,000 env steps (auto: on for "
                                                           "continuous actions)")
    assert said(*continuous, "--scale-rewards", "on") == ("observations normalized: yes, lr annealed to 0 at 50,000 "
                                                          "env steps (auto: on for continuous actions); rewards "
                                                          "scaled: yes (--scale-rewards on)")
    assert said("--name-env", "CartPole-v1") == "observations normalized: no (auto: off for discrete actions)"
