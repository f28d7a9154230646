"""What a run's results say, read in this process: failure lines, the results helpers (returns, steps, stops),
an iteration's time recovered from RLlib's moving average, and how a run ended for the job that requeues it."""

import json
import math

import pytest
from conftest import RETURN

from rlhpc.outputs.report import failure_line
from rlhpc.run import results


def test_failure_line_prefers_the_env_error_over_rllibs_bare_runtime_error():
    text = ("Traceback (most recent call last):\n  File \"env.py\", line 3, in step\n"
            "ValueError: simulator diverged at t=12\n\nThe above exception was the direct cause:\n"
            "Traceback (most recent call last):\nRuntimeError\n")
    assert failure_line(text, RuntimeError()) == "ValueError: simulator diverged at t=12"
    assert failure_line("", KeyError("x")) == "KeyError"


def test_results_helpers_read_returns_steps_and_stops():
    result = {"training_iteration": 4, "num_env_steps_sampled_lifetime": 8000,
              "env_runners": {"episode_return_mean_100": 190.5, "episode_return_mean": 300.0}}
    assert results.episode_return(result) == 190.5  # the 100-episode mean, not one iteration's
    assert results.episode_return({"env_runners": {"episode_return_mean_100": math.nan}}) is None
    assert results.env_steps(result) == 8000
    assert results.env_steps({"env_runners": {"num_env_steps_sampled_lifetime": 7}}) == 7  # legacy stack
    stop = {RETURN: 195.0, "training_iteration": 5}
    assert results.target_reward(stop) == 195.0 and not results.reached(result, stop)
    assert not results.stop_reached(result, stop)
    assert results.stop_reached({**result, "training_iteration": 5}, stop)
    assert results.as_number(True) is None and results.as_number(3) == 3
    assert results.flatten({"a": {"b": 1, "c": {}}, "d": 2}) == {"a/b": 1, "d": 2}


def test_this_iterations_time_is_recovered_from_rllibs_moving_average():
    from rlhpc.algo.metrics import RLLIB_EMA_COEFF, this_iteration

    seconds, average, previous = [5.0, 1.0, 1.0, 3.0], None, None
    for value in seconds:  # what RLlib's EmaStats reports after each iteration (the first value as it is)
        average = value if average is None else (1 - RLLIB_EMA_COEFF) * average + RLLIB_EMA_COEFF * value
        assert this_iteration(average, previous, 1) == pytest.approx(value, rel=1e-9)
        previous = average
    # Several training steps in an iteration (DQN): their sum, exact when they took equal time.
    after_three = previous
    for _ in range(3):
        after_three = (1 - RLLIB_EMA_COEFF) * after_three + RLLIB_EMA_COEFF * 0.5
    assert this_iteration(after_three, previous, 3) == pytest.approx(1.5, rel=1e-9)


@pytest.mark.parametrize("metrics, error, stopped_by, ending", [
    ({"training_iteration": 5}, None, None, "done"),  # --stop-iters 5 met
    ({"training_iteration": 3}, None, "SIGUSR1", "stopped"),
    ({"training_iteration": 5}, None, "SIGUSR1", "done"),  # the signal came in the last iteration
    ({"training_iteration": 3}, "training failed: ...", None, "failed"),
    ({"training_iteration": 2, "done": True}, None, None, "done"),  # its scheduler (ASHA) stopped it early
    ({"training_iteration": 2, "done": True}, None, "SIGUSR1", "done"),  # and the signal came after that
])
def test_how_a_run_ended_for_the_job_that_requeues_it(metrics, error, stopped_by, ending):
    from rlhpc.outputs.report import Outcome, TrialOutcome
    from rlhpc.outputs.report import ending as how
    from rlhpc.run.spec import Search, Stop

    spec = type("Spec", (), {"stop": Stop(criteria={"training_iteration": 5}, as_test=False),
                             "search": Search(space=(), num_samples=1, metric="episode_return_mean", mode="max")})()
    outcome = Outcome("/x", [TrialOutcome(path="/x/t", metrics=metrics, checkpoint=None, error=error)], stopped_by)
    assert how(outcome, spec) == ending


def test_a_signal_after_every_trial_ended_stopped_nothing(tmp_path, capsys):
    """A search whose last trial ASHA stopped before Slurm's USR1 was handled: the run says the signal stopped
    nothing (not "stopped by SIGUSR1", which made the job chain requeue a finished search), lists ASHA's decision
    and writes it, and ends DONE. A trial still to train when the signal came keeps the run resumable."""
    from rlhpc.outputs.report import Outcome, TrialOutcome, ending, finish
    from rlhpc.run.spec import Search, Stop

    grid = ((("lr",), "grid", (1e-3, 1e-7)),)
    spec = type("Spec", (), {"stop": Stop(criteria={"training_iteration": 4}, as_test=False),
                             "search": Search(space=grid, num_samples=1, metric="episode_return_mean", mode="max",
                                              scheduler="asha", grace_period=2, reduction_factor=2)})()
    full = TrialOutcome(path=str(tmp_path / "a"), metrics={"training_iteration": 4, "done": True}, checkpoint=None)
    early = TrialOutcome(path=str(tmp_path / "b"), metrics={"training_iteration": 2, "done": True}, checkpoint=None)
    outcome = Outcome(str(tmp_path), [full, early], stopped_by="SIGUSR1")
    finish(outcome, spec, started=0.0)
    out = capsys.readouterr().out
    assert "SIGUSR1 came after every trial had ended: nothing left to resume" in out and "stopped by" not in out
    assert "asha stopped 1 of 2 trials early: b at iteration 2" in out
    assert json.loads((tmp_path / "rlhpc_scheduler.json").read_text())["stopped_early"][0]["trial"] == "b"
    assert ending(outcome, spec) == "done"

    running = TrialOutcome(path=str(tmp_path / "c"), metrics={"training_iteration": 3}, checkpoint=None)
    # Left to train: a trial the signal interrupted, or one Tune had not made yet (it makes a grid's as it starts
    # them: the second of two run one at a time, when ASHA stopped the first before the signal was handled).
    for trials in ([full, running], [early]):
        outcome = Outcome(str(tmp_path), trials, stopped_by="SIGUSR1")
        finish(outcome, spec, started=0.0)
        assert "stopped by SIGUSR1; state and checkpoint saved" in capsys.readouterr().out
        assert ending(outcome, spec) == "stopped"


def test_dqns_learning_time_counts_its_learner_updates_not_its_training_steps():
    """DQN times each of its learner updates (8 per training step here, none before learning starts); counted as one
    per training step, a 5.7 s iteration read `learning 0.0 s`."""
    from ray.rllib.algorithms.dqn import DQNConfig

    from rlhpc.algo.metrics import RLLIB_EMA_COEFF, TrialState, split_time

    config = DQNConfig().environment("CartPole-v1").env_runners(num_env_runners=0, num_envs_per_env_runner=8,
                                                                rollout_fragment_length=4)
    config.training(train_batch_size_per_learner=32, training_intensity=8)  # 8 updates of 32 per 32 steps sampled
    state, steps = TrialState(), 28
    state.timers = {"env_runner_sampling_timer": 0.02, "learner_update_timer": 0.026}
    sampling, learning = state.timers["env_runner_sampling_timer"], state.timers["learner_update_timer"]
    for _ in range(steps):  # each training step: 1 sample of 0.018 s, 8 updates of 0.012 s
        sampling = (1 - RLLIB_EMA_COEFF) * sampling + RLLIB_EMA_COEFF * 0.018
        for _ in range(8):
            learning = (1 - RLLIB_EMA_COEFF) * learning + RLLIB_EMA_COEFF * 0.012
    result = {"num_training_step_calls_per_iteration": steps, "time_this_iter_s": 5.7,
              "timers": {"env_runner_sampling_timer": sampling, "learner_update_timer": learning},
              "learners": {"__all_modules__": {"num_env_steps_trained": steps * 8 * 32}}}
    split_time(state, result, config)
    assert result["time_sampling_s"] == pytest.approx(steps * 0.018, rel=1e-6)
    assert result["time_learning_s"] == pytest.approx(steps * 8 * 0.012, rel=1e-6)  # 2.7 s, not 0.0
    # Before learning starts (nothing trained): no update ran, 0 s, whatever the average says.
    result = {"num_training_step_calls_per_iteration": steps, "timers": dict(result["timers"]),
              "learners": {"__all_modules__": {}}}
    split_time(state, result, config)
    assert result["time_learning_s"] == 0.0
