"""After training: evaluate a checkpoint, compare runs, read TensorBoard files, on real runs.

Two short trainings: the session's default run, CartPole-v0 to its reward threshold (a policy worth
evaluating; conftest.default_run), and 3 iterations with 4 envs per runner beside it (a second line for the
comparison).
"""

import re
import shutil
from pathlib import Path

import pandas
import pytest
from conftest import RETURN, clean_env, error_lines, read_progress, run_module, run_script


def assert_one_error_line(out, expected_text):
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = error_lines(out.stderr)
    assert len(errors) == 1, out.stderr
    assert expected_text in errors[0], errors[0]


@pytest.fixture(scope="module")
def runs(default_run):
    default, storage, home = default_run
    env = clean_env(HOME=home)
    vec4 = run_script("simple_example/simple_trainer.py", "--storage-path", storage, "--name", "vec4",
                      "--stop-iters", 3, "--num-cpus", 0, "--num-envs-per-runner", 4, env=env, timeout=600)
    trained = {}
    for name, out, experiment in (("cartpole", default, "CartPole-v0"), ("vec4", vec4, "vec4")):
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        checkpoints = [line.split(None, 1)[1] for line in out.stdout.splitlines() if line.startswith("checkpoint:")]
        trained[name] = {"dir": storage / experiment, "checkpoint": Path(checkpoints[-1]), "stdout": out.stdout}
    assert "reached=yes" in trained["cartpole"]["stdout"]
    return {"storage": storage, "home": home, "env": env, **trained}


def test_evaluate_plays_the_trained_policy_and_records_a_video(runs, tmp_path):
    video = tmp_path / "cartpole.mp4"
    # The experiment dir: its one trial, that trial's latest checkpoint.
    out = run_module("rlhpc.evaluate", runs["cartpole"]["dir"], "--episodes", 10, "--seed", 0, "--video", video,
                     env=runs["env"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and not error_lines(out.stderr), out.stderr
    assert f"checkpoint: {runs['cartpole']['checkpoint']}" in out.stdout
    lines = out.stdout.splitlines()
    assert sum(line.startswith("episode ") for line in lines) == 10
    summary = [line for line in lines if line.startswith("mean return ")]
    assert len(summary) == 1 and summary[0].endswith("over 10 episodes"), out.stdout
    mean = float(summary[0].split()[2])
    assert mean >= 195, out.stdout

    import imageio.v2 as imageio

    reader = imageio.get_reader(video, format="FFMPEG")
    shapes = [frame.shape for frame in reader]
    reader.close()
    assert len(shapes) > 10
    assert set(shapes) == {(400, 600, 3)}  # CartPole's 600 x 400 canvas, unscaled


def test_evaluate_accepts_a_trial_dir_and_a_checkpoint_dir(runs):
    checkpoint = runs["cartpole"]["checkpoint"]
    played = []
    for where in (checkpoint.parent, checkpoint):
        out = run_module("rlhpc.evaluate", where, "--episodes", 1, "--seed", 0, env=runs["env"])
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"checkpoint: {checkpoint}" in out.stdout
        played.append([line for line in out.stdout.splitlines() if line.startswith("episode ")])
    # The same policy, greedy, from the same seed: the same episode, and a trained one.
    assert len(played[0]) == 1 and played[0] == played[1], played
    assert float(played[0][0].split()[3]) >= 150, played  # "episode    1  return     200.00  length    200"


def corrupt_copy(runs, tmp_path, damage):
    trial = tmp_path / "trial"
    shutil.copytree(runs["cartpole"]["checkpoint"].parent, trial)
    checkpoint = trial / runs["cartpole"]["checkpoint"].name
    state = checkpoint / "learner_group/learner/rl_module/default_policy/module_state.pkl"
    assert state.is_file()
    damage(state)
    return checkpoint


@pytest.mark.parametrize("case", ["missing", "not a checkpoint", "truncated state", "deleted state",
                                  "render without display"])
def test_evaluate_bad_input_is_one_line(runs, tmp_path, case):
    env = runs["env"]
    if case == "missing":
        where, expected = tmp_path / "nope", "no such checkpoint"
    elif case == "not a checkpoint":
        where, expected = tmp_path, "is not a checkpoint"
    elif case == "truncated state":
        def truncate(path):
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)
        where, expected = corrupt_copy(runs, tmp_path, truncate), "corrupt checkpoint"
    elif case == "deleted state":
        where, expected = corrupt_copy(runs, tmp_path, Path.unlink), "corrupt checkpoint"
    else:
        env = {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        where, expected = runs["cartpole"]["checkpoint"], "needs a display"
    args = ["--render"] if case == "render without display" else []
    assert_one_error_line(run_module("rlhpc.evaluate", where, *args, env=env), expected)


THREE_ACTION_CARTPOLE = """
import gymnasium
from gymnasium.envs.classic_control import CartPoleEnv


class ThreeActionCartPole(CartPoleEnv):  # CartPole's observations, one more action (do nothing... almost)
    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.action_space = gymnasium.spaces.Discrete(3)

    def step(self, action):
        return super().step(min(int(action), 1))
"""


def test_evaluate_refuses_an_env_with_other_actions(runs, tmp_path):
    """Same observations, other actions: the CartPole policy would play on, never picking action 2."""
    (tmp_path / "three.py").write_text(THREE_ACTION_CARTPOLE)
    out = run_module("rlhpc.evaluate", runs["cartpole"]["checkpoint"], "--name-env",
                     f"{tmp_path / 'three.py'}:ThreeActionCartPole", env=runs["env"])
    assert_one_error_line(out, "the policy acts in Discrete(2) but")
    assert "takes Discrete(3)" in out.stderr


def test_load_runs_matches_the_csvs(runs):
    from rlhpc.outputs.compare import load_runs

    loaded = load_runs([runs["cartpole"]["dir"], runs["storage"] / "vec*"])  # an experiment dir and a glob
    assert [run.path.parent.name for run in loaded] == ["CartPole-v0", "vec4"]
    for run in loaded:
        csv = pandas.read_csv(run.path / "progress.csv")
        assert list(run.data.columns) == ["iteration", "steps", "time", "return"]
        for ours, theirs in [("iteration", "training_iteration"), ("steps", "num_env_steps_sampled_lifetime"),
                             ("time", "time_total_s"), ("return", RETURN)]:
            pandas.testing.assert_series_equal(run.data[ours], csv[theirs], check_names=False)
    assert len(loaded[1].data) == 3
    # Labels: the experiment name and the one setting that differs (4 vs 8 envs per runner).
    assert loaded[0].label == "CartPole-v0 (num_envs_per_env_runner=8)", loaded[0].label
    assert loaded[1].label == "vec4 (num_envs_per_env_runner=4)", loaded[1].label
    # A glob over an experiment dir also matches its own files (rlhpc_run.json): only the trial dirs count.
    assert (runs["storage"] / "vec4" / "rlhpc_run.json").is_file()
    assert [run.path for run in load_runs([runs["storage"] / "vec4" / "*"])] == [loaded[1].path]


def test_compare_writes_the_figure(runs, tmp_path):
    from matplotlib.image import imread

    png = tmp_path / "compare.png"
    out = run_module("rlhpc.compare", runs["cartpole"]["dir"], runs["vec4"]["dir"], "--x", "steps",
                     "--out", png, "--title", "4 vs 8 envs per runner", env=runs["env"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"wrote {png} (2 runs" in out.stdout
    for name in ("cartpole", "vec4"):  # each run's summary line holds its own last row
        last = read_progress(runs[name]["dir"])[-1]
        assert re.search(rf"^{runs[name]['dir'].name} \(.*\): {int(last['training_iteration'])} iterations, "
                         rf"{int(last['num_env_steps_sampled_lifetime']):,} steps, .* final return {last[RETURN]:.2f}$",
                         out.stdout, re.MULTILINE), out.stdout
    image = imread(png)
    assert image.shape[:2] == (500, 800)  # 8 x 5 inches at 100 dpi
    # Both curves are drawn, in matplotlib's first two colours (measured: ~1,000 pixels for the 20-iteration
    # run, ~150 for the 3-iteration one; an empty axes has none of either).
    rgb = image[..., :3] * 255
    drawn = [int((abs(rgb - color).sum(axis=-1) < 40).sum()) for color in ((31, 119, 180), (255, 127, 14))]
    assert drawn[0] > 500 and drawn[1] > 75, drawn


def test_compare_bad_input_is_one_line(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error_line(run_module("rlhpc.compare", empty), "no progress.csv")
    assert_one_error_line(run_module("rlhpc.compare", tmp_path / "missing"), "no such directory")
    assert_one_error_line(run_module("rlhpc.compare", str(tmp_path / "nothing*")), "nothing matches")
    trial = tmp_path / "started" / "PPO_trial"
    trial.mkdir(parents=True)
    (trial / "progress.csv").write_text("")  # a trial that has not reported yet
    assert_one_error_line(run_module("rlhpc.compare", trial.parent), "no results yet")


def test_tensorboard_files_hold_the_return_curve(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("cartpole", "vec4"):
        trial = runs[name]["checkpoint"].parent
        assert list(trial.glob("events.out.tfevents.*"))
        events = EventAccumulator(str(trial))
        events.Reload()
        tags = [tag for tag in events.Tags()["scalars"] if tag.endswith("episode_return_mean_100")]
        assert tags, events.Tags()["scalars"][:20]
        rows = read_progress(runs[name]["dir"])
        points = events.Scalars(tags[0])
        assert len(points) == len(rows)
        assert [p.step for p in points] == [int(row["training_iteration"]) for row in rows]
        assert points[-1].value == pytest.approx(rows[-1][RETURN], rel=1e-5)


def test_a_sac_policy_is_evaluated_with_the_action_it_was_trained_to_take():
    """SAC acts with tanh(Gaussian sample) scaled to the bounds; RLlib's deterministic action is the bare mean,
    which overshoots (mean 1.5 -> torque 2.0 clipped, where the policy means 2 tanh(1.5) = 1.81)."""
    import gymnasium
    import numpy as np
    import torch
    from ray.rllib.algorithms.sac import SACConfig

    from rlhpc.outputs.evaluate import GreedyPolicy

    env = gymnasium.make("Pendulum-v1")  # torque in [-2, 2]
    module = SACConfig().environment("Pendulum-v1").get_rl_module_spec(env=env).build()
    last = [layer for layer in module.pi.modules() if isinstance(layer, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias[0] += 1.5  # a confident policy: the mean well past where tanh bends
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        mean = module.forward_inference({"obs": torch.from_numpy(obs)[None]})["action_dist_inputs"][0, 0].item()
    assert mean > 1.0
    action = GreedyPolicy(module, (env.observation_space, env.action_space), {}, "Pendulum-v1")(obs)
    assert action == pytest.approx([2 * np.tanh(mean)], abs=1e-5)


def test_a_run_that_collapses_keeps_its_best_checkpoint_by_evaluation(tmp_path):
    """lr 1e-3 for 8,000 steps, then 0.5: the greedy policy peaks and collapses. --eval-interval 2 evaluates at
    iterations 2, 4, 6; the best evaluation's checkpoint is kept beside the latest, evaluate plays it by default,
    and it beats the latest."""
    out = run_script("simple_example/simple_trainer.py", "--name-env", "CartPole-v1", "--eval-interval", 2,
                     "--eval-episodes", 5, "--stop-iters", 6, "--seed", 0, "--set",
                     "lr=[[0,0.001],[8000,0.001],[8001,0.5]]", "--storage-path", tmp_path,
                     env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = read_progress(tmp_path / "CartPole-v1")
    evaluated = {int(r["training_iteration"]): r["evaluation_return"] for r in rows
                 if not pandas.isna(r["evaluation_return"])}
    assert sorted(evaluated) == [2, 4, 6], evaluated
    best_at = max(evaluated, key=evaluated.get)
    assert rows[-1]["evaluation_return_best"] == evaluated[best_at] > evaluated[6], evaluated
    [trial] = [p for p in (tmp_path / "CartPole-v1").iterdir() if p.is_dir()]
    assert (trial / "best_checkpoint").is_dir() and list(trial.glob("checkpoint_*"))
    best = run_module("rlhpc.evaluate", tmp_path / "CartPole-v1", "--episodes", 5, "--seed", 0)
    latest = run_module("rlhpc.evaluate", tmp_path / "CartPole-v1", "--episodes", 5, "--seed", 0, "--latest")
    assert best.returncode == 0 and latest.returncode == 0, best.stderr + latest.stderr
    assert f"best checkpoint by evaluation: iteration {best_at}, evaluation return {evaluated[best_at]:.2f}" \
        in best.stdout
    assert f"checkpoint: {trial / 'best_checkpoint'}" in best.stdout
    means = [float(re.search(r"^mean return ([\d.]+) ", o.stdout, re.MULTILINE).group(1)) for o in (best, latest)]
    assert means[0] > means[1], means
