"""--normalize-obs end to end on a MuJoCo env (the [mujoco] extra stays working): the observation normalizer is saved
in checkpoints, a --resume goes on with its statistics, and rlhpc.evaluate plays with them; --anneal-lr's schedule
goes on from the steps sampled before the resume; --scale-rewards' statistics (the learner's state) go on too. Which
runs get them (the env families, --print-config): unit/test_env_families.py."""

import json
import pickle
from pathlib import Path

import pytest
from conftest import clean_env, returns_seen, run_module, run_script

from rlhpc.outputs import evaluate

TRAINER = "simple_example/simple_trainer.py"
ENV = "InvertedPendulum-v5"  # continuous actions: --normalize-obs auto turns it on


def saved_filter(checkpoint: Path) -> dict:
    """The MeanStdFilter's state as RLlib saved it: {None: {"running_stats": [...], ...}} for one agent."""
    with open(checkpoint.joinpath(*evaluate.FILTER_PATH), "rb") as f:
        return pickle.load(f)[None]


def learning_rates(experiment: Path) -> list:
    """The learner's lr at each iteration, as the trial's result.json has it."""
    [results] = experiment.glob("*/result.json")
    return [json.loads(line)["learners"]["default_policy"]["default_optimizer_learning_rate"]
            for line in results.read_text().splitlines()]


def test_the_normalizer_is_saved_resumed_and_played_by_evaluate(tmp_path):
    pytest.importorskip("mujoco")
    env = clean_env(HOME=tmp_path)
    args = ["--name-env", ENV, "--seed", 0, "--checkpoint-freq", 1, "--storage-path", tmp_path, "--name", "run",
            "--scale-rewards", "on"]
    out = run_script(TRAINER, *args, "--stop-iters", 1, "--stop-timesteps", 6000, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "defaults for continuous envs (Box actions, rlhpc/run/defaults.py) with InvertedPendulum-v5's own " \
           "model_config; " in out.stdout
    assert ("observations normalized: yes, lr annealed to 0 at 6,000 env steps (auto: on for continuous actions); "
            "rewards scaled: yes (--scale-rewards on)" in out.stdout)
    [first] = sorted(tmp_path.glob("run/*/checkpoint_*"))
    pushes = saved_filter(first)["running_stats"][0]["num_pushes"]
    assert pushes >= 2048  # every observation of the first batch went through it
    scaled = returns_seen(first)
    assert scaled >= 2048  # and every reward of it through the learner's scaler

    out = run_script(TRAINER, "--storage-path", tmp_path, "--name", "run", "--resume", "--stop-iters", 2, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    last = max(tmp_path.glob("run/*/checkpoint_*"))
    assert last != first
    # Resumed with the saved statistics, then updated: more pushes than one batch's, not a fresh filter's.
    assert saved_filter(last)["running_stats"][0]["num_pushes"] >= pushes + 2048
    assert returns_seen(last) >= scaled + 2048  # the learner's reward statistics as well
    # The lr falls with the steps sampled in both jobs (3e-4 x (1 - steps / 6,000)): a count started again at the
    # resume would have the second iteration at the first one's lr.
    first_lr, second_lr = learning_rates(tmp_path / "run")
    assert 1.5e-4 < first_lr < 3e-4 and second_lr < 1.2e-4

    normalizer = evaluate.observation_filters(last)[None]
    mean, std = normalizer.running_stats.mean, normalizer.running_stats.std
    assert mean.shape == (4,) and abs(mean).max() > 1e-3 and (std > 0).all()  # learned, not the identity
    module = evaluate.load_module(last, next(iter(evaluate.module_dirs(last).values())))
    import gymnasium

    game = gymnasium.make(ENV)
    spaces = (game.observation_space, game.action_space)
    obs = game.reset(seed=0)[0] + 0.5  # off the centre, where raw and normalized observations differ most
    played = evaluate.GreedyPolicy(module, spaces, {}, ENV, normalizer)
    assert played.prepare(obs) == pytest.approx(((obs - mean) / (std + 1e-8)).clip(-10, 10), rel=1e-4, abs=1e-4)
    dropped = evaluate.GreedyPolicy(module, spaces, {}, ENV)
    assert played(obs) != pytest.approx(dropped(obs))  # without its normalizer the policy acts otherwise
    game.close()

    out = run_module("rlhpc.evaluate", last, "--episodes", 1, "--seed", 0, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"observations normalized as in training: mean/std of {normalizer.running_stats.n:,} observations" \
        in out.stdout
