"""Envs whose observation carries an action mask train a policy that never picks a masked action, in training and in
`python -m rlhpc.evaluate` (rlhpc.algo.action_masking): our MaskedDispatchEnv (a 2-D observation beside the mask)
and PettingZoo's tic-tac-toe (an AEC env, a (3, 3, 2) board) in RLlib's PettingZooEnv. Real training, a few
iterations each."""

from conftest import clean_env, error_lines, read_progress, run_module, run_script

from custom_gym_env.masked_env import MaskedDispatchEnv


def test_a_random_policy_picks_masked_actions_often():
    """What the runs below are up against: without the mask a fifth or more of the steps would be refused."""
    env = MaskedDispatchEnv()
    env.action_space.seed(0)
    env.reset(seed=0)
    steps, illegal = 0, 0
    while steps < 500:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            illegal += info["illegal_actions"]
            env.reset()
    assert illegal > 0.2 * steps


def test_a_masked_env_trains_and_plays_without_a_masked_action(tmp_path):
    out = run_script("custom_gym_env/custom_env_trainer.py", "--name-env", "MaskedDispatchEnv", "--stop-iters", 2,
                     "--seed", 0, "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not error_lines(out.stderr)
    assert "step() raised" not in out.stderr  # the probe's random steps keep to the mask too
    rows = read_progress(tmp_path / "MaskedDispatchEnv")
    assert len(rows) == 2
    # A masked action ends the episode at once with -10: every episode ran its 20 jobs and none paid the penalty.
    for row in rows:
        assert row["env_runners/num_episodes"] > 0
        assert row["env_runners/episode_len_min"] == 20 and row["env_runners/episode_return_min"] >= 0, row

    # strict=true: the env raises on a masked action, so one greedy masked action would fail the command.
    played = run_module("rlhpc.evaluate", tmp_path / "MaskedDispatchEnv", "--episodes", 5, "--env-config",
                        "strict=true", "--seed", 0, env=clean_env(HOME=tmp_path))
    assert played.returncode == 0, played.stderr[-3000:]
    assert played.stdout.count("length     20") == 5, played.stdout


def test_pettingzoo_tictactoe_trains_and_plays_without_a_masked_move(tmp_path):
    # strict=true in training too: a masked move raises in the env runner and fails the run.
    out = run_script("simple_example/simple_trainer.py", "--name-env", "tests/tictactoe_env.py:make_env",
                     "--env-config", "strict=true", "--stop-iters", 1, "--seed", 0, "--storage-path", tmp_path,
                     env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    [row] = read_progress(tmp_path / "make_env")
    assert row["env_runners/num_episodes"] > 0 and row["env_runners/episode_len_min"] >= 5  # no game ended early

    played = run_module("rlhpc.evaluate", tmp_path / "make_env", "--episodes", 5, "--seed", 0,
                        env=clean_env(HOME=tmp_path))
    assert played.returncode == 0, played.stderr[-3000:]
    assert played.stdout.count("player_1") >= 5 and "over 5 episodes" in played.stdout, played.stdout
