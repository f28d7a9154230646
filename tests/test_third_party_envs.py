"""The envs researchers bring, from PyPI (the `envs` extra), trained with the defaults: a PettingZoo Parallel env by
name, highway-env's 2-D observation, and a Dict of mixed parts (custom_gym_env/zones_env.py, a building's zones).
Few iterations and small batches: what is asserted is that they train, what the first lines say was done to their
observations, and that evaluate plays them the same way. The multi-node run of a 2-D observation is in
test_custom_env_trainer.py (it shares that module's Ray cluster)."""

import re

from conftest import RETURN, clean_env, error_lines, read_progress, returns_seen, run_module, run_script

from rlhpc.outputs import evaluate

TRAINER = "simple_example/simple_trainer.py"
SMALL_BATCH = ("--set", "train_batch_size_per_learner=128", "--set", "minibatch_size=64", "--set", "num_epochs=2",
               "--num-envs-per-runner", 2)


def test_a_pettingzoo_parallel_env_trains_by_name_and_evaluate_plays_each_agent(tmp_path):
    """mpe2's simple_spread_v3 (3 agents, one shared policy) by `package:env_module`, --env-config to its
    constructor, with continuous actions: the continuous family's defaults, its rewards scaled (--scale-rewards on:
    one std for all agents) and its observations normalized, each agent by its own statistics (saved under the
    agent's id); evaluate rebuilds the env from the run's record and plays each agent with its own normalizer."""
    env = clean_env(HOME=tmp_path)
    out = run_script(TRAINER, "--name-env", "mpe2:simple_spread_v3", "--env-config", "max_cycles=10",
                     "--env-config", "continuous_actions=true", "--stop-iters", 2, *SMALL_BATCH,
                     "--scale-rewards", "on", "--storage-path", tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "policies: one shared policy for 3 agents" in out.stdout
    assert "defaults for continuous envs" in out.stdout and "observations normalized: yes" in out.stdout
    assert "rewards scaled: yes (--scale-rewards on)" in out.stdout
    rows = read_progress(tmp_path / "simple_spread_v3")
    assert [row["training_iteration"] for row in rows] == [1, 2]
    # max_cycles=10 reached the env (its default is 25): every episode is 10 steps long
    assert rows[-1]["env_runners/episode_len_mean"] == 10, rows[-1]["env_runners/episode_len_mean"]
    assert rows[-1][RETURN] < 0  # simple_spread's rewards are distances: negative
    [checkpoint] = (tmp_path / "simple_spread_v3").glob("*/checkpoint_*")
    # Every agent's every reward went through the learner's scaler: 2 iterations of 128 env steps, 3 agents each.
    assert returns_seen(checkpoint) >= 2 * 128 * 3
    normalizers = evaluate.observation_filters(checkpoint)
    assert sorted(normalizers) == ["agent_0", "agent_1", "agent_2"]
    # Each agent's own statistics: 2 iterations of 128 env steps, every agent observing at each step and reset.
    [seen] = {n.running_stats.n for n in normalizers.values()}
    assert seen >= 256, seen
    assert normalizers["agent_0"].running_stats.mean[0] != normalizers["agent_1"].running_stats.mean[0]
    played = run_module("rlhpc.evaluate", tmp_path / "simple_spread_v3", "--episodes", 2, "--seed", 0, env=env)
    assert played.returncode == 0, played.stderr[-3000:]
    assert re.search(r"^episode +2 .*return +-[\d.]+", played.stdout, re.MULTILINE), played.stdout
    assert ("observations normalized as in training, each agent's own mean/std from the checkpoint: "
            f"agent_0 {seen} observations, agent_1 {seen} observations, agent_2 {seen} observations") in played.stdout
    # An agent the run never trained (a 4th, by another env_config) is named, not played with what others learned.
    other = run_module("rlhpc.evaluate", tmp_path / "simple_spread_v3", "--env-config", "N=4", env=env)
    [error] = error_lines(other.stderr)
    assert other.returncode == 2 and error.endswith(
        "'s run trained agents agent_0, agent_1, agent_2, not agent_3: is it the env (and env_config) the run "
        "trained on?"), other.stderr


def test_a_2d_observation_env_from_pypi_trains_flattened(tmp_path):
    """highway-env's highway-fast-v0 observes a table of vehicles, Box(5, 5): RLlib has no default network for it
    (its first env runner used to fail); the trainer flattens it and says so."""
    out = run_script(TRAINER, "--name-env", "highway_env:highway-fast-v0", "--stop-iters", 1, *SMALL_BATCH,
                     "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "observation Box(5, 5) flattened to 25" in out.stdout
    [row] = read_progress(tmp_path / "highway_env-highway-fast-v0")
    assert row["num_env_steps_sampled_lifetime"] >= 128


def test_a_dict_of_mixed_parts_trains_and_evaluate_flattens_it_the_same_way(tmp_path):
    env = clean_env(HOME=tmp_path)
    out = run_script(TRAINER, "--name-env", "custom_gym_env/zones_env.py:ZonesEnv", "--env-config", "obs=dict",
                     "--stop-iters", 2, *SMALL_BATCH, "--storage-path", tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "observation Dict(hour: Discrete(24), occupied: MultiBinary(4), zones: Box(4, 2)) flattened to 36" \
        in out.stdout
    assert len(read_progress(tmp_path / "ZonesEnv")) == 2
    played = run_module("rlhpc.evaluate", tmp_path / "ZonesEnv", "--episodes", 1, "--seed", 0, env=env)
    assert played.returncode == 0, played.stderr[-3000:]
    assert re.search(r"^episode +1 .*return +-[\d.]+", played.stdout, re.MULTILINE), played.stdout
