"""Experiment files (--config-file, rlhpc.run.config_file): read into flags before the command line's; a bad
one is one line; the shipped files' entries resolve."""

import json

import pytest
from conftest import REPO, one_error_line


@pytest.mark.parametrize("text, message", [
    ("name_env: CartPole-v1\nlrr: 3\n", "error: --config-file exp.yaml: unknown key 'lrr'; keys are the "
     "trainer's flags (see --help) and set: / env_config: for config overrides"),
    ("set:\n  learning_rate: 0.1\n", "error: PPO has no config key 'learning_rate'"),
    ("name_env: [CartPole-v1\n", "error: --config-file exp.yaml: not valid YAML (line 2, column 1): expected ',' or "
     "']', but got '<stream end>'"),
    ("- num_cpus: 2\n", "error: --config-file exp.yaml: expected KEY: VALUE lines (a mapping), got a list"),
    ("num_cpus: two\n", "error: argument --num-cpus: expected a whole number >= 0, got 'two'"),
    ("as_test: maybe\n", "error: --config-file exp.yaml: as_test takes true or false, got 'maybe'"),
    ("CartPole-v1: {stop_reward: 450}\nAcrobot-v1: {stop_reward: -100}\n", "error: --config-file exp.yaml holds "
     "entries for CartPole-v1, Acrobot-v1: pick one with --name-env"),
])
def test_experiment_file_errors_are_one_line(trainer, tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(text)
    code, _, err = trainer("--config-file", "exp.yaml", "--stop-iters", 1)
    assert code == 2
    assert one_error_line(err).startswith(message), err


def test_an_experiment_files_settings_reach_the_config_and_flags_win(trainer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("name-env: CartPole-v1\nnum_envs_per_runner: 4\nstop_iters: 50\nas_test: true\n"
                                       "set:\n  lr: 0.0005\n  model_config.fcnet_hiddens: [32, 32]\n")
    code, out, err = trainer("--config-file", "exp.yaml", "--stop-iters", 3, "--set", "lr=0.002", "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["config"]["lr"] == 0.002 and printed["config"]["num_envs_per_env_runner"] == 4  # flag, file
    assert printed["config"]["_model_config"]["fcnet_hiddens"] == [32, 32]
    assert printed["spec"]["stop"]["training_iteration"] == 3 and printed["spec"]["as_test"] is True
    assert printed["spec"]["flags"][:2] == ["--name-env", "CartPole-v1"]  # what --resume parses again


@pytest.mark.parametrize("env", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1",
                                 "custom_gym_env/custom_env.py:SlowCartPole"])
def test_the_shipped_experiment_files_entries_resolve(trainer, monkeypatch, env):
    monkeypatch.chdir(REPO)
    code, out, err = trainer("--config-file", "experiments/ppo.yaml", "--name-env", env, "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["spec"]["config_file"]["entry"] == env and printed["spec"]["env"]["name"] == env


def test_a_searchs_best_trial_is_an_experiment_file_that_trains_it_again(trainer, tmp_path, monkeypatch):
    """The file a search writes for its best trial (rlhpc.outputs.report.save_winner: <experiment>/best_trial.yaml)
    read back by --config-file: the winner's values as config overrides over the search's own --set, the search's
    other flags kept, the search itself (and its experiment name) gone."""
    from rlhpc.outputs.report import save_winner
    from rlhpc.run.cli import build_parser
    from rlhpc.run.spec import resolve

    monkeypatch.chdir(tmp_path)
    flags = ["--name-env", "CartPole-v1", "--grid", "lr=[1e-3,3e-4]", "--grid",
             "model_config.fcnet_hiddens=[[32],[64]]", "--scheduler", "asha", "--set", "gamma=0.95", "--set", "lr=0.1",
             "--stop-iters", "7", "--seed", "3", "--name", "search", "--storage-path", str(tmp_path / "results")]
    spec = resolve(build_parser("").parse_args(flags), flags=flags)
    path = save_winner(spec, {"lr": 3e-4, "model_config.fcnet_hiddens": [64]}, "return = 80", str(tmp_path))
    assert path == str(tmp_path / "best_trial.yaml")
    code, out, err = trainer("--config-file", path, "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    config, rerun = printed["config"], printed["spec"]
    assert (config["lr"], config["_model_config"]["fcnet_hiddens"], config["gamma"]) == (3e-4, [64], 0.95)
    assert (rerun["env"]["name"], rerun["seed"], rerun["stop"]["training_iteration"]) == ("CartPole-v1", 3, 7)
    assert rerun["search"] == [] and rerun["scheduler"] is None and rerun["name"] == "CartPole-v1"
    assert rerun["storage_path"] == str(tmp_path / "results") and rerun["backend"] == "inprocess"
