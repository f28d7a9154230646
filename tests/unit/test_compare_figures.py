"""rlhpc.compare's figures, read back from the figure's own data: which band a seed group gets (a range below
CI_MIN_SEEDS seeds, a 95 % CI from there), over which x range, one legend entry per group, titles naming the
algorithm and env, panels per env, --dpi. Runs are real experiment dirs written here (progress.csv, params.json,
the run record), as the trainer writes them."""

import csv
import json

import pytest

from rlhpc.outputs import compare

RETURN = "env_runners/episode_return_mean_100"


def write_run(experiment, trial, *, seed, returns, env="CartPole-v1", algo="PPO", seconds_per_iter=1.0):
    trial_dir = experiment / trial
    trial_dir.mkdir(parents=True)
    with open(trial_dir / "progress.csv", "w", newline="") as f:
        rows = csv.DictWriter(f, ["training_iteration", "num_env_steps_sampled_lifetime", "time_total_s", RETURN])
        rows.writeheader()
        for i, value in enumerate(returns, start=1):
            rows.writerow({"training_iteration": i, "num_env_steps_sampled_lifetime": 1000 * i,
                           "time_total_s": seconds_per_iter * i, RETURN: value})
    (trial_dir / "params.json").write_text(json.dumps({"env": env, "seed": seed, "lr": 0.001}))
    (experiment / "rlhpc_run_spec.json").write_text(json.dumps({"algo": algo, "stop": {RETURN: 450}}))
    return trial_dir


def seeds(tmp_path, count, **kwargs):
    experiment = tmp_path / "CartPole-v1"
    for seed in range(count):
        write_run(experiment, f"PPO_CartPole-v1_{seed}", seed=seed, returns=[10 + seed, 20 + seed, 30 + seed],
                  **kwargs)
    return experiment


def figure_of(paths, x="iteration", **kwargs):
    groups = compare.seed_groups(compare.load_runs(paths))
    return groups, compare.draw(groups, x, **kwargs)


def legend_texts(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


@pytest.mark.parametrize(("count", "name"), [(2, "range of 2 seeds"), (3, "range of 3 seeds"), (5, "95% CI")])
def test_a_seed_group_is_one_legend_entry_and_its_band_is_a_ci_only_with_enough_seeds(tmp_path, count, name):
    groups, fig = figure_of([seeds(tmp_path, count)])
    [ax] = fig.axes
    assert legend_texts(ax) == [f"CartPole-v1 ({count} seeds): mean, band = {name}"]
    [band] = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    if count < compare.CI_MIN_SEEDS:  # the range: from the lowest seed to the highest, at every point
        assert ys.min() == pytest.approx(10) and ys.max() == pytest.approx(30 + count - 1)
    else:  # a CI of the mean lies inside the range
        assert ys.min() > 10 and ys.max() < 30 + count - 1
    line = compare.group_line(groups[0])
    assert f"({name})" in line and "95% CI" not in line.replace(f"({name})", "")


def test_runs_started_one_per_seed_with_a_numbered_name_are_one_group_named_without_the_number(tmp_path):
    """benchmarks/continuous_control.py names its runs <env>_<seed>, a job array's tasks are name, name_2, ...: one
    seed group, labelled by the name they share."""
    paths = [write_run(tmp_path / f"Hopper-v5_{seed}", "PPO_Hopper-v5_0", seed=seed, env="Hopper-v5",
                       returns=[10 + seed, 20 + seed]).parent for seed in (1, 2, 3)]
    groups, fig = figure_of(paths)
    [group] = groups
    assert [run.params["seed"] for run in group.runs] == [1, 2, 3]
    assert legend_texts(fig.axes[0]) == ["Hopper-v5 (3 seeds): mean, band = range of 3 seeds"]


def test_a_band_covers_the_x_range_every_seed_reached(tmp_path):
    """--x time with a slower seed: the band ends where the faster seed's last point is, not past it."""
    experiment = tmp_path / "CartPole-v1"
    write_run(experiment, "PPO_a", seed=0, returns=[10, 20, 30], seconds_per_iter=1.0)  # ends at 3 s
    write_run(experiment, "PPO_b", seed=1, returns=[12, 22, 32, 42], seconds_per_iter=2.0)  # ends at 8 s
    _, fig = figure_of([experiment], x="time")
    [band] = fig.axes[0].collections
    xs = band.get_paths()[0].vertices[:, 0]
    assert xs.min() == pytest.approx(2.0) and xs.max() == pytest.approx(3.0)


def test_the_title_names_the_algorithm_and_env_and_the_y_label_says_which_return(tmp_path):
    _, fig = figure_of([seeds(tmp_path, 2, algo="APPO")])
    [ax] = fig.axes
    assert ax.get_title() == "APPO on CartPole-v1"
    assert ax.get_ylabel() == "return: mean of the last 100 episodes (exploring policy)"


def test_runs_of_different_envs_get_panels_of_their_own(tmp_path):
    write_run(tmp_path / "cartpole", "PPO_c", seed=None, returns=[10, 20])
    write_run(tmp_path / "acrobot", "PPO_a", seed=None, returns=[-500, -200], env="Acrobot-v1")
    _, fig = figure_of([tmp_path / "cartpole", tmp_path / "acrobot"])
    assert sorted(ax.get_title() for ax in fig.axes) == ["PPO on Acrobot-v1", "PPO on CartPole-v1"]
    assert all(len(legend_texts(ax)) == 1 for ax in fig.axes)
    assert not any("null" in text for ax in fig.axes for text in legend_texts(ax))  # no seed=null in labels


def test_dpi_sets_the_image_size(tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "fig.png"
    assert compare.main([str(seeds(tmp_path, 2)), "--out", str(out), "--dpi", "200"]) == 0
    assert imread(out).shape[:2] == (5 * 200, 8 * 200)


def test_an_iteration_in_which_no_episode_ended_is_not_drawn_as_a_new_point(tmp_path):
    """The first iteration after a resume often ends no episode: its return is the window carried over, flagged by
    RLlib's num_episodes = 0; the curve leaves it out instead of drawing a step."""
    trial = tmp_path / "run" / "PPO_CartPole-v1_0"
    trial.mkdir(parents=True)
    with open(trial / "progress.csv", "w", newline="") as f:
        rows = csv.DictWriter(f, ["training_iteration", "num_env_steps_sampled_lifetime", "time_total_s", RETURN,
                                  "env_runners/num_episodes"])
        rows.writeheader()
        for i, (value, episodes) in enumerate([(10, 5), (20, 4), (20, 0), (40, 3)], start=1):
            rows.writerow({"training_iteration": i, "num_env_steps_sampled_lifetime": 1000 * i,
                           "time_total_s": i, RETURN: value, "env_runners/num_episodes": episodes})
    (trial / "params.json").write_text(json.dumps({"env": "CartPole-v1", "seed": 0}))
    _, figure = figure_of([tmp_path / "run"])
    [line] = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2, 4] and list(line.get_ydata()) == [10, 20, 40]


def test_a_searchs_scheduler_decisions_mark_its_trials(tmp_path):
    """rlhpc_scheduler.json as the trainer writes it: a trial PBT made take another's weights gets a dot at that
    iteration and says so; one ASHA stopped ends in an x and says at which iteration."""
    experiment = tmp_path / "pbt"
    write_run(experiment, "PPO_a", seed=0, returns=[10, 20, 30, 40])
    write_run(experiment, "PPO_b", seed=1, returns=[5, 6, 35, 41])
    (experiment / "rlhpc_scheduler.json").write_text(json.dumps(
        {"scheduler": "pbt", "exploits": [{"trial": "PPO_b", "iteration": 2, "from": "PPO_a"}]}))
    stopped_experiment = tmp_path / "asha"
    write_run(stopped_experiment, "PPO_c", seed=0, returns=[10, 20, 30, 40])
    write_run(stopped_experiment, "PPO_d", seed=1, returns=[1, 2])
    (stopped_experiment / "rlhpc_scheduler.json").write_text(json.dumps(
        {"scheduler": "asha", "stopped_early": [{"trial": "PPO_d", "iteration": 2, "return": 2}]}))
    runs = compare.load_runs([experiment, stopped_experiment])
    labels = {run.path.name: run.label for run in runs}
    assert labels["PPO_b"].endswith("[pbt: took another trial's weights at iteration 2]")
    assert labels["PPO_d"].endswith("[asha stopped it at iteration 2]")
    assert "[" not in labels["PPO_a"] and "[" not in labels["PPO_c"]
    figure = compare.draw([compare.Group(run.label, [run]) for run in runs], "iteration")
    markers = {(line.get_marker(), tuple(line.get_xdata()), tuple(line.get_ydata()))
               for line in figure.axes[0].get_lines() if line.get_marker() not in ("None", None, "")}
    assert markers == {("o", (2,), (6,)), ("x", (2,), (2,))}, markers
