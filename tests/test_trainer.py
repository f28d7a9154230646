"""simple_example/simple_trainer.py, run as a researcher runs it: real Ray, real training, files on disk."""

import json
import math
import os
import socket
import time

import pytest
from conftest import (
    RETURN,
    assert_return_is_the_mean_of_the_last_100_episodes,
    clean_env,
    error_lines,
    read_progress,
    run_script,
)

TRAINER = "simple_example/simple_trainer.py"


def test_default_run_reaches_cartpole_v0_threshold(default_run):
    """No flags at all (but where to write), from a HOME without a token: PPO on CartPole-v0 must reach its 195
    threshold. (The session's run: test_after_training.py evaluates it.)"""
    out, tmp_path, _ = default_run
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_progress(tmp_path / "CartPole-v0")  # the tutorial's <storage>/<name>/<trial>/progress.csv
    assert rows, "no progress.csv written"
    assert rows[-1][RETURN] >= 195.0
    assert "summary: reached=yes" in out.stdout
    assert list(tmp_path.glob("CartPole-v0/*/events.out.tfevents.*")), "no TensorBoard event file"
    assert list(tmp_path.glob("CartPole-v0/*/checkpoint_*")), "no checkpoint at the end"
    # One local trial trains in the trainer's process (rlhpc/train/inprocess.py), not in a Tune actor.
    assert (tmp_path / "CartPole-v0" / "rlhpc_run.json").is_file()
    assert not list(tmp_path.glob("CartPole-v0/experiment_state-*.json"))
    assert_return_is_the_mean_of_the_last_100_episodes(rows)
    # Where each iteration's time went (rlhpc.algo.metrics): sampling and learning, together most of the iteration.
    for row in rows:
        spent = row["time_sampling_s"] + row["time_learning_s"]
        assert 0.5 * row["time_this_iter_s"] <= spent <= 1.05 * row["time_this_iter_s"], row
    assert "(sampling " in out.stdout and ", learning " in out.stdout


def test_the_return_column_counts_every_episode_from_the_first_row(tmp_path):
    """Pendulum's episodes last 200 steps; in 100-step iterations none ends in odd ones and exactly one in even
    ones. The column is there (NaN) before the first episode ends, and an iteration's single episode counts
    (RLlib reports a list of one as a plain number)."""
    out = run_script(TRAINER, "--name-env", "Pendulum-v1", "--stop-iters", 6, "--storage-path", tmp_path,
                     "--set", "train_batch_size_per_learner=100", "--set", "minibatch_size=50",
                     "--set", "num_envs_per_env_runner=1", env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_progress(tmp_path / "Pendulum-v1")
    # RLlib's own episode columns are not in progress.csv (its header comes from iteration 1): result.json.
    [results] = (tmp_path / "Pendulum-v1").glob("*/result.json")
    runners = [json.loads(line)["env_runners"] for line in results.read_text().splitlines()]
    assert [r.get("num_episodes", 0) for r in runners] == [0, 1, 0, 1, 0, 1]
    ended = []
    for row, r in zip(rows, runners, strict=True):
        if r.get("num_episodes"):
            ended.append(r["episode_return_mean"])  # one episode: its return
        if ended:
            assert row[RETURN] == pytest.approx(sum(ended) / len(ended), abs=1e-6)
        else:
            assert math.isnan(row[RETURN])


def test_local_run_ignores_a_foreign_token_in_home(tmp_path):
    """A stale ~/.ray/auth_token (say, from another cluster) must not break a local run."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0" * 64)
    out = run_script(TRAINER, "--storage-path", tmp_path / "r", "--stop-iters", 1, "--name", "one",
                     env=clean_env(HOME=home))
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(read_progress(tmp_path / "r" / "one")) == 1


def test_random_agent_prints_each_step():
    out = run_script("simple_example/random_agent.py", "--name-env", "CartPole-v1", "--seed", 3, "--episodes", 2)
    assert out.returncode == 0, out.stderr
    steps = [line for line in out.stdout.splitlines() if line.startswith("action=")]
    assert steps and all("observation=" in s and "reward=1.0" in s and "terminated=" in s for s in steps)
    assert sum("terminated=True" in s or "truncated=True" in s for s in steps) == 2
    assert out.stdout.count("finished: return") == 2


# One case per error class as a researcher meets it (a script, a fresh process); the other cases of each
# class run in-process in tests/unit (test_flags.py, ...).
@pytest.mark.parametrize("args, message", [
    (["--name-env", "NoSuchEnv-v0"], "unknown env 'NoSuchEnv-v0'"),
    (["--num-cpus", "-1"], "argument --num-cpus: expected a whole number >= 0, got '-1'"),
    (["--set", "lr=fast"], "bad value for lr: expected a number, got 'fast'"),
    (["--storage-path", "/proc/no/such/dir"], "cannot write results to /proc/no/such/dir"),
])
def test_bad_input_is_one_line_before_ray_starts(args, message, tmp_path):
    out = run_script(TRAINER, *args, "--stop-iters", 1, env=clean_env(HOME=tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == error_lines(out.stderr), f"more than one line:\n{out.stderr}"
    assert len(error_lines(out.stderr)) == 1 and message in out.stderr, out.stderr
    assert not list(tmp_path.glob("ray_results/*")), "a failed start left an experiment behind"


@pytest.mark.parametrize("args, message", [
    (["--num-gpus", "1"], "--num-gpus 1 needs 1 GPU(s) for the learner(s), but this machine has no GPU"),
    (["--num-cpus", "64"], "--num-cpus 64 asks for 64 env runners + 1 CPU(s) for the driver/learner = 65 CPUs"),
])
def test_impossible_resources_are_refused_without_a_pending_trial(args, message, tmp_path):
    out = run_script(TRAINER, *args, "--storage-path", tmp_path, env=clean_env(HOME=tmp_path), timeout=120)
    assert out.returncode == 2
    assert len(error_lines(out.stderr)) == 1 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("CartPole-v0/*")), "a Tune trial was created"


def test_unreachable_address_answers_quickly(tmp_path):
    started = time.time()
    out = run_script(TRAINER, "--address", "127.0.0.1:9", env=clean_env(HOME=tmp_path), timeout=60)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        ("error: cannot reach the Ray cluster at 127.0.0.1:9: Connection refused "
         "(is the head node up? see `ray start --head --port=...`)")]
    assert time.time() - started < 30


def no_answer(address, seconds):
    return (f"error: no answer from the Ray cluster at {address} within {seconds} s: if it uses token auth, export "
            "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<its token file>; else check that this is a Ray head's port")


def test_a_port_that_never_answers_is_given_up_in_one_line(tmp_path):
    """Something listens but is not a Ray head (say, a typo'd port): ray.init would wait for minutes."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        out = run_script(TRAINER, "--address", address, env=clean_env(HOME=tmp_path, RLHPC_CONNECT_TIMEOUT=5),
                         timeout=90)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [no_answer(address, 5)]
    assert "Traceback" not in out.stderr


def test_ip_head_is_the_default_address(tmp_path):
    """The tutorial's sbatch exports ip_head; the trainer follows it without --address."""
    out = run_script(TRAINER, env=clean_env(HOME=tmp_path, ip_head="127.0.0.1:9"), timeout=60)
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in out.stderr and out.returncode == 2


@pytest.mark.cluster
def test_cluster_run_trains_with_runners_on_both_nodes(ray_cluster, tmp_path):
    """A run joined to a 2-node Ray cluster: its env runners on both nodes, the 100-episode return made of both
    runners' episodes and rising. (Training to the threshold on a cluster: the Slurm 3-node job, test_slurm.py.)"""
    out = run_script(TRAINER, "--address", ray_cluster.address, "--num-cpus", 2, "--storage-path", tmp_path,
                     "--stop-iters", 4, "--seed", 0, env=ray_cluster.env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "2 nodes" in out.stdout
    rows = read_progress(tmp_path / "CartPole-v0")
    assert len(rows) == 4 and rows[-1][RETURN] > rows[0][RETURN] + 10, [r[RETURN] for r in rows]
    assert_return_is_the_mean_of_the_last_100_episodes(rows, several_runners=True)
    assert list(tmp_path.glob("CartPole-v0/experiment_state-*.json")), "a cluster run goes through Tune"
    nodes = {n["id"] for n in ray_cluster.nodes() if n["alive"]}
    runner_nodes = {a["node"] for a in ray_cluster.actors() if a["class"] == "SingleAgentEnvRunner"}
    assert len(nodes) == 2 and runner_nodes == nodes, f"env runners ran on {runner_nodes}, nodes are {nodes}"


@pytest.mark.cluster
def test_cluster_rejects_a_wrong_token_in_one_line(ray_cluster, tmp_path):
    wrong = tmp_path / "wrong_token"
    with open(os.open(wrong, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("f" * 64)
    started = time.time()
    out = run_script(TRAINER, "--address", ray_cluster.address, env=clean_env(RAY_AUTH_TOKEN_PATH=wrong), timeout=90)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        f"error: the Ray cluster at {ray_cluster.address} rejected our auth token: "
        "set RAY_AUTH_TOKEN_PATH to the cluster's token file (and RAY_AUTH_MODE=token)"]
    assert "Traceback" not in out.stderr and time.time() - started < 45


@pytest.mark.cluster
def test_cluster_without_a_token_is_one_line(ray_cluster, tmp_path):
    """The token forgotten: no token anywhere (a fresh HOME, no RAY_AUTH_TOKEN_PATH)."""
    # With RAY_AUTH_MODE=token exported, Ray itself refuses to start the driver.
    out = run_script(TRAINER, "--address", ray_cluster.address, env=clean_env(HOME=tmp_path, RAY_AUTH_MODE="token"),
                     timeout=90)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [(f"error: the Ray cluster at {ray_cluster.address} needs an auth token and "
                                        "none was found: set RAY_AUTH_TOKEN_PATH to the cluster's token file")]
    assert "Traceback" not in out.stderr
    # Without it, the cluster never answers the driver: given up after RLHPC_CONNECT_TIMEOUT.
    out = run_script(TRAINER, "--address", ray_cluster.address, env=clean_env(HOME=tmp_path, RLHPC_CONNECT_TIMEOUT=10),
                     timeout=90)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [no_answer(ray_cluster.address, 10)]
    assert "Traceback" not in out.stderr


@pytest.mark.cluster
def test_redis_password_flag_joins_the_cluster_and_warns(ray_cluster, tmp_path):
    """The tutorial's --redis-password still works: the value is the cluster's token."""
    token = ray_cluster.token_path.read_text()
    out = run_script(TRAINER, "--address", ray_cluster.address, "--redis-password", token, "--stop-iters", 1,
                     "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "warning: --redis-password puts the token in argv" in out.stderr
    assert token not in out.stdout + out.stderr
    assert len(read_progress(tmp_path / "CartPole-v0")) == 1
    # The trainer re-executes itself without the token in argv: Ray's job table records the command line.
    entrypoints = ray_cluster.query("import ray._private.state as s\n"
                                    "print(json.dumps([job['Entrypoint'] for job in s.jobs()]))")
    assert any("--redis-password" not in e and TRAINER in e and str(tmp_path) in e for e in entrypoints), entrypoints
    assert not any(token in e for e in entrypoints)


def test_the_rlhpc_command_trains_as_the_script_does(tmp_path):
    """`rlhpc train` (installed by pip install -e .) with the old `rllib train` names: the same files, the same
    config and, with a seed, the same numbers as simple_trainer.py given the same settings in an experiment
    file (rlhpc/run/config_file.py), one of them overridden by a flag."""
    import subprocess
    import sys

    rlhpc = os.path.join(os.path.dirname(sys.executable), "rlhpc")
    env = clean_env(HOME=tmp_path)
    command = subprocess.run([rlhpc, "train", "--env", "CartPole-v1", "--algo", "PPO", "--seed", "0", "--stop-iters",
                              "2", "--set", "lr=0.0005", "--storage-path", str(tmp_path / "command")], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert command.returncode == 0, command.stderr[-3000:]
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("name_env: CartPole-v1\nrun: PPO\nseed: 0\nstop-iters: 50\nset:\n  lr: 0.0005\n")
    script = run_script(TRAINER, "--config-file", experiment, "--stop-iters", 2, "--storage-path", tmp_path / "script",
                        env=env)
    assert script.returncode == 0, script.stderr[-3000:]
    record = json.loads((tmp_path / "script" / "CartPole-v1" / "rlhpc_run_spec.json").read_text())
    assert record["config_file"] == {"path": str(experiment), "entry": None, "text": experiment.read_text()}

    def files(root):
        [trial] = [p for p in root.glob("CartPole-v1/*") if p.is_dir()]
        return trial, sorted(str(p.relative_to(trial)) for p in trial.rglob("*") if "events.out" not in p.name)

    (ours, ours_files), (theirs, their_files) = files(tmp_path / "command"), files(tmp_path / "script")
    assert ours_files == their_files
    params = [json.loads((t / "params.json").read_text()) for t in (ours, theirs)]
    for p in params:  # a function's repr holds its address
        p.pop("policy_mapping_fn")
    assert params[0] == params[1] and params[0]["lr"] == 0.0005  # the file's setting, in both
    rows = [read_progress(t.parent) for t in (ours, theirs)]
    assert len(rows[1]) == 2  # the flag's --stop-iters over the file's
    assert [r["num_env_steps_sampled_lifetime"] for r in rows[0]] == [r["num_env_steps_sampled_lifetime"]
                                                                      for r in rows[1]]
    assert [r[RETURN] for r in rows[0]] == pytest.approx([r[RETURN] for r in rows[1]])
    listed = subprocess.run([rlhpc, "nonsense"], capture_output=True, text=True, env=env, check=False)
    assert listed.returncode == 2
    assert listed.stderr.strip() == ("error: unknown command 'nonsense': give one of train, evaluate, compare, "
                                     "doctor (see rlhpc --help)")
