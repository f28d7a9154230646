"""--normalize-obs end to end on a MuJoCo env (the [mujoco] extra stays working): the observation normalizer is saved
in checkpoints, a --resume goes on with its statistics, and rlhpc.evaluate plays with them. Which runs get it
(the env families, --print-config): unit/test_env_families.py."""

import pickle
from pathlib import Path

import pytest
from conftest import clean_env, run_module, run_script

from rlhpc.outputs import evaluate

TRAINER = "simple_example/simple_trainer.py"
ENV = "InvertedPendulum-v5"  # continuous actions: --normalize-obs auto turns it on


def saved_filter(checkpoint: Path) -> dict:
    """The MeanStdFilter's state as RLlib saved it: {None: {"running_stats": [...], ...}} for one agent."""
    with open(checkpoint.joinpath(*evaluate.FILTER_PATH), "rb") as f:
        return pickle.load(f)[None]


def test_the_normalizer_is_saved_resumed_and_played_by_evaluate(tmp_path):
    pytest.importorskip("mujoco")
    env = clean_env(HOME=tmp_path)
    args = ["--name-env", ENV, "--seed", 0, "--checkpoint-freq", 1, "--storage-path", tmp_path, "--name", "run"]
    out = run_script(TRAINER, *args, "--stop-iters", 1, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "observations normalized: yes (auto: on for continuous actions)" in out.stdout
    [first] = sorted(tmp_path.glob("run/*/checkpoint_*"))
    pushes = saved_filter(first)["running_stats"][0]["num_pushes"]
    assert pushes >= 2048  # every observation of the first batch went through it

    out = run_script(TRAINER, "--storage-path", tmp_path, "--name", "run", "--resume", "--stop-iters", 2, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    last = max(tmp_path.glob("run/*/checkpoint_*"))
    assert last != first
    # Resumed with the saved statistics, then updated: more pushes than one batch's, not a fresh filter's.
    assert saved_filter(last)["running_stats"][0]["num_pushes"] >= pushes + 2048

    normalizer = evaluate.observation_filter(last)
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
