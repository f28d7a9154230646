"""custom_gym_env/custom_env_trainer.py: the users' own envs, trained locally and on a real cluster."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import (
    PYTHON,
    REPO,
    RETURN,
    clean_env,
    error_lines,
    lines_until,
    read_progress,
    run_module,
    run_script,
    simulator_pids,
)

TRAINER = "custom_gym_env/custom_env_trainer.py"


def test_basic_env_reaches_its_optimum(tmp_path):
    """The tutorial's one-step env: +1 for action 2. Stop reward = optimum 1.0 minus a 0.05 margin."""
    out = run_script(TRAINER, "--storage-path", tmp_path, "--as-test", env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stop when: env_runners/episode_return_mean_100 >= 0.95" in out.stdout
    assert read_progress(tmp_path / "BasicEnv")[-1][RETURN] >= 0.95


def test_corridor_reaches_its_known_optimum_with_env_config(tmp_path):
    """length=8: optimum 1 - 0.1 * 7 = 0.3; the trainer stops at 0.25."""
    out = run_script(TRAINER, "--name-env", "SlipperyCorridorEnv", "--env-config", "length=8", "--seed", 1,
                     "--storage-path", tmp_path, "--as-test", env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "episode_return_mean_100 >= 0.25" in out.stdout
    assert read_progress(tmp_path / "SlipperyCorridorEnv")[-1][RETURN] >= 0.25


def test_old_gym_api_env_is_adapted_with_one_warning(tmp_path):
    out = run_script(TRAINER, "--name-env", "OldGymCorridorEnv", "--stop-iters", 2, "--storage-path", tmp_path,
                     env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [line for line in out.stderr.splitlines() if "uses the old gym API" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:")
    assert "terminated, truncated" in warnings[0]
    assert len(read_progress(tmp_path / "OldGymCorridorEnv")) == 2
    # Its old-style render(mode="human") (it prints the corridor) is what evaluate --render shows.
    out = run_module("rlhpc.evaluate", tmp_path / "OldGymCorridorEnv", "--render", "--episodes", 1, "--max-steps", 3,
                     env=clean_env(HOME=tmp_path, DISPLAY=":0"), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert any(re.fullmatch(r"[.A]*A[.A]*G|[.]*A", line) for line in out.stdout.splitlines()), out.stdout


@pytest.mark.parametrize("args, message", [
    (["--name-env", "SlipperyCorridorEnv", "--env-config", "lenght=5"], "bad --env-config for SlipperyCorridorEnv"),
    (["--name-env", "SlipperyCorridorEnv", "--env-config", "length=-3"], "length"),
    (["--name-env", "SlipperyCorridorEnv", "--env-config", "length"], "malformed --env-config 'length'"),
    (["--name-env", "BasicEnv", "--env-config", "size=2"], "bad --env-config for BasicEnv"),
])
def test_bad_env_config_is_one_line(args, message, tmp_path):
    out = run_script(TRAINER, *args, "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 2
    assert len(error_lines(out.stderr)) == 1 and message in error_lines(out.stderr)[0], out.stderr
    assert "Traceback" not in out.stderr


BROKEN_ENV_TRAINER = """
import sys
sys.path.insert(0, {repo!r})
from custom_gym_env.custom_env import BasicEnv
from rlhpc.train.trainer import main


class SimulatorEnv(BasicEnv):
    def __init__(self, config=None):
        raise FileNotFoundError("simulator.cfg not found")


sys.exit(main(description="", name_env="SimulatorEnv", envs={{"SimulatorEnv": SimulatorEnv}}))
"""


def test_a_custom_env_that_cannot_be_built_is_one_line(tmp_path):
    """The env's own error (not a bad --env-config) is found on the driver before Ray starts."""
    script = tmp_path / "broken_env_trainer.py"
    script.write_text(BROKEN_ENV_TRAINER.format(repo=str(REPO)))
    out = run_script(script, "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        "error: cannot create env 'SimulatorEnv': FileNotFoundError: simulator.cfg not found"], out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.cluster
def test_custom_env_is_built_on_the_worker_node(ray_cluster, tmp_path):
    """The worker node cannot import custom_env.py from disk paths of the driver's script dir:
    the trainer ships the module. Env runners on the worker must build and step the env."""
    # Two iterations, not to the optimum: learning on a cluster is test_trainer.py's; here, where the env is built.
    out = run_script(TRAINER, "--address", ray_cluster.address, "--num-cpus", 2, "--storage-path", tmp_path,
                     "--stop-iters", 2, env=ray_cluster.env, cwd="/")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = read_progress(tmp_path / "BasicEnv")
    assert len(rows) == 2 and rows[-1]["num_env_steps_sampled_lifetime"] >= 4000
    head_id = next(n["id"] for n in ray_cluster.nodes() if n["ip"] != "127.0.0.2")
    worker_runners = [a for a in ray_cluster.actors()
                      if a["class"] == "SingleAgentEnvRunner" and a["node"] != head_id]
    assert worker_runners, "no env runner ran on the worker node"


def test_any_trainer_takes_a_file_and_class_and_evaluate_finds_it_from_the_record(tmp_path):
    """No trainer script of one's own: --name-env path/to/file.py:Class. The run records the file's absolute
    path (rlhpc_run_spec.json), so evaluate rebuilds the env from another directory without --name-env."""
    # The tutorial's old config keys too (issue 27): mapped onto the new stack's, as params.json reads them back.
    out = run_script("simple_example/simple_trainer.py", "--name-env", "custom_gym_env/custom_env.py:BasicEnv",
                     "--stop-iters", 2, "--set", "train_batch_size=1000", "--set", "sgd_minibatch_size=100",
                     "--set", "num_sgd_iter=3", "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(read_progress(tmp_path / "BasicEnv")) == 2  # the default name: the class's
    [params] = (tmp_path / "BasicEnv").glob("*/params.json")
    trained = json.loads(params.read_text())
    batch, minibatch, epochs = (trained[k] for k in ("_train_batch_size_per_learner", "minibatch_size", "num_epochs"))
    assert (batch, minibatch, epochs) == (1000, 100, 3)
    assert "--set train_batch_size: the old API stack's name, set as train_batch_size_per_learner" in out.stderr
    record = json.loads((tmp_path / "BasicEnv" / "rlhpc_run_spec.json").read_text())
    assert record["env"] == {"name": "custom_gym_env/custom_env.py:BasicEnv", "kind": "class",
                             "module": str(REPO / "custom_gym_env" / "custom_env.py"), "attribute": "BasicEnv"}
    out = run_module("rlhpc.evaluate", tmp_path / "BasicEnv", "--episodes", 2, env=clean_env(HOME=tmp_path),
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "env: custom_gym_env/custom_env.py:BasicEnv, 2 greedy episode(s)" in out.stdout
    assert sum(line.startswith("episode ") for line in out.stdout.splitlines()) == 2


def test_a_slow_env_trains_to_its_threshold_with_its_envs_stepping_in_parallel(tmp_path):
    """SlowCartPole with 1 ms steps: --vectorize auto times it before Ray starts and steps the 8 envs in their
    own processes; PPO reaches CartPole's threshold for 50-step episodes (48.75)."""
    out = run_script(TRAINER, "--name-env", "SlowCartPole", "--env-config", "step_ms=1", "--env-config",
                     "max_steps=50", "--seed", 0, "--as-test", "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert re.search(r"^envs step async \(a step takes 1\.\d ms, >= 1 ms\)", out.stdout, re.MULTILINE), out.stdout
    assert "stop when: env_runners/episode_return_mean_100 >= 48.75" in out.stdout
    assert read_progress(tmp_path / "SlowCartPole")[-1][RETURN] >= 48.75


@pytest.mark.cluster
def test_a_slow_env_steps_in_parallel_inside_remote_runners_on_both_nodes(ray_cluster, tmp_path):
    """Async sub-envs are processes forked inside each env runner actor, here on both nodes of the cluster."""
    earlier = {a["id"] for a in ray_cluster.actors()}
    out = run_script(TRAINER, "--name-env", "SlowCartPole", "--env-config", "step_ms=2", "--env-config",
                     "max_steps=50", "--address", ray_cluster.address, "--num-cpus", 2, "--num-envs-per-runner", 4,
                     "--stop-iters", 2, "--storage-path", tmp_path, env=ray_cluster.env, cwd="/")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "envs step async (a step takes 2." in out.stdout
    assert "train batch 2,000 = 8 envs x 250 steps" in out.stdout
    rows = read_progress(tmp_path / "SlowCartPole")
    assert [row["training_iteration"] for row in rows] == [1, 2] and rows[-1]["num_env_steps_sampled_lifetime"] >= 4000
    runner_nodes = {a["node"] for a in ray_cluster.actors()
                    if a["class"] == "SingleAgentEnvRunner" and a["id"] not in earlier}
    assert runner_nodes == {n["id"] for n in ray_cluster.nodes() if n["alive"]}, runner_nodes


@pytest.mark.cluster
def test_a_multi_agent_env_samples_on_both_nodes_of_a_cluster(ray_cluster, tmp_path):
    """Through Tune on a real 2-node cluster: multi-agent env runners on both nodes, per-agent policies."""
    earlier = {a["id"] for a in ray_cluster.actors()}
    out = run_script(TRAINER, "--name-env", "RendezvousEnv", "--policies", "per-agent", "--address",
                     ray_cluster.address, "--num-cpus", 2, "--stop-iters", 2, "--storage-path", tmp_path,
                     env=ray_cluster.env, cwd="/")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = read_progress(tmp_path / "RendezvousEnv")
    assert [row["training_iteration"] for row in rows] == [1, 2]
    assert "env_runners/policy_return_mean_100/agent_0" in rows[-1] and "env_runners/policy_return_mean_100/agent_1" \
        in rows[-1]
    runner_nodes = {a["node"] for a in ray_cluster.actors()
                    if a["class"] == "MultiAgentEnvRunner" and a["id"] not in earlier}
    assert runner_nodes == {n["id"] for n in ray_cluster.nodes() if n["alive"]}, runner_nodes


@pytest.mark.cluster
def test_a_2d_observation_env_is_flattened_alike_on_both_nodes_of_a_cluster(ray_cluster, tmp_path):
    """A table observation (zones x features, custom_gym_env/zones_env.py) on a real 2-node cluster: the env runners
    on both nodes build it from the file the driver names and flatten it as the driver said."""
    earlier = {a["id"] for a in ray_cluster.actors()}
    out = run_script(TRAINER, "--name-env", REPO / "custom_gym_env" / "zones_env.py:ZonesEnv", "--address",
                     ray_cluster.address, "--num-cpus", 2, "--stop-iters", 1, "--storage-path", tmp_path,
                     env=ray_cluster.env, cwd="/")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "observation Box(4, 2) flattened to 8" in out.stdout
    [row] = read_progress(tmp_path / "ZonesEnv")
    assert row["num_env_steps_sampled_lifetime"] > 0 and row[RETURN] < 0
    runner_nodes = {a["node"] for a in ray_cluster.actors()
                    if a["class"] == "SingleAgentEnvRunner" and a["id"] not in earlier}
    assert runner_nodes == {n["id"] for n in ray_cluster.nodes() if n["alive"]}, runner_nodes


@pytest.mark.cluster
def test_crashing_and_stopped_simulators_are_rebuilt_inside_runners_on_both_nodes(ray_cluster, tmp_path):
    """The external-simulator example (a server process per env copy, custom_gym_env/external_sim_env.py) on a real
    2-node cluster, its simulators exiting every 150 steps and one copy's SIGSTOPped after iteration 1: the env guard
    in each remote runner rebuilds the crashed copies and, past --env-timeout in iteration 2, the stopped one (its
    simulator killed); the run trains on and counts both (the same damage to a local run: test_env_failures.py).
    2 runners x 4 envs: each copy records who it is at each build (env_config record_dir), so the test sees 8
    distinct identities (runner, index, run-wide number), 8 scratch folders and 8 simulator ports, on both nodes'
    runners, and a copy rebuilt after its crash that keeps its identity and folder (rlhpc/envs/identity.py)."""
    earlier = {a["id"] for a in ray_cluster.actors()}
    records = tmp_path / "who"
    records.mkdir()
    args = ["--name-env", REPO / "custom_gym_env" / "external_sim_env.py:ExternalSimEnv", "--env-config",
            "crash_every_steps=150", "--env-config", f"record_dir={records}", "--address", ray_cluster.address,
            "--num-cpus", 2, "--num-envs-per-runner", 4, "--vectorize", "async", "--env-timeout", 5,
            "--stop-iters", 2, "--storage-path", tmp_path]
    proc = subprocess.Popen([PYTHON, str(REPO / TRAINER), *map(str, args)], env=ray_cluster.env, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = lines_until(proc, "iter    1")  # sampling is over in seconds: iteration 2 meets the stopped one
        stopped = stop_one_remote_copy(records)
        stdout, stderr = proc.communicate(timeout=300)
        stdout = "".join(seen) + stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    rows = read_progress(tmp_path / "ExternalSimEnv")
    assert len(rows) == 2 and sum(row["env_runners/env_restarts"] for row in rows) >= 2, rows
    assert rows[1]["env_runners/env_timeouts"] >= 1, rows[1]
    assert "the simulator crashed" in stderr  # each copy's first crash, one line (rlhpc/envs/guard.py)
    deadline = time.monotonic() + 10  # the stopped simulators were killed with their copy, not left behind
    while set(stopped) & set(simulator_pids("--dir")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(stopped) & set(simulator_pids("--dir")), f"SIGSTOPped simulators {stopped} outlived the run"
    runners = [a for a in ray_cluster.actors() if a["class"] == "SingleAgentEnvRunner" and a["id"] not in earlier]
    assert {a["node"] for a in runners} == {n["id"] for n in ray_cluster.nodes() if n["alive"]}, runners
    assert_8_distinct_copies([json.loads(p.read_text()) for p in records.glob("*.json")], runners)


def stop_one_remote_copy(records) -> list:
    """SIGSTOPs the simulators of one copy that a remote runner's sub-env process built (vector index 1 and up:
    index 0 may be the copy a runner builds for the spaces alone); -> their PIDs."""
    for build in (json.loads(p.read_text()) for p in sorted(records.glob("*.json"))):
        if build["worker_index"] >= 1 and build["vector_index"] >= 1:
            pids = simulator_pids(build["scratch_dir"])
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            if pids:
                return pids
    raise AssertionError("no remote copy's simulator is running")


def assert_8_distinct_copies(builds: list, runners: list) -> None:
    """The builds recorded in the remote runners (the driver's probe is worker 0): 2 runners x 4 copies, each copy
    one identity and folder at every build, built in a runner actor's process or a sub-env process of it."""
    remote = [b for b in builds if b["worker_index"] >= 1]
    copies = {(b["worker_index"], b["vector_index"], b["copy_id"], b["scratch_dir"]) for b in remote}
    assert {(w, v) for w, v, _, _ in copies} == {(w, v) for w in (1, 2) for v in range(4)}, copies
    assert len(copies) == 8 and len({c[2] for c in copies}) == 8 and len({c[3] for c in copies}) == 8, copies
    # Folders: runner-<w>-<runner pid>-<start>/copy-<v>, the runner's own process (an env runner actor's).
    node_of = {a["pid"]: a["node"] for a in runners}
    runner_pids = {int(os.path.basename(os.path.dirname(b["scratch_dir"])).split("-")[2]) for b in remote}
    assert {node_of.get(pid) for pid in runner_pids} == {a["node"] for a in runners}, (runner_pids, runners)
    # Built in the sub-env processes (not the copy the runner builds itself, for the spaces only): more than 8 builds,
    # as every copy's simulator crashed at least once; the 8 first builds' simulators run at once, on 8 ports.
    in_sub_envs = sorted((b for b in remote if b["pid"] not in runner_pids), key=lambda b: b["time"])
    assert len(in_sub_envs) > 8, "no copy was rebuilt after its crash"
    first: dict = {}
    for b in in_sub_envs:
        first.setdefault(b["copy_id"], b["port"])
    assert len(first) == 8 and len(set(first.values())) == 8, first


@pytest.mark.cluster
def test_the_preflight_reads_a_running_cluster_node_by_node(ray_cluster, tmp_path):
    """`python -m rlhpc.doctor --address`: one task per node reports what Ray counts there against what the node
    has. A third node started with --num-cpus=4 on this 2-core machine (Ray #28586: Ray ignoring the Slurm
    allocation) is named; the others pass."""
    ray_cluster._start_node(2, 4, None)
    extra = ray_cluster.procs.pop()
    try:
        ray_cluster.wait_for_nodes(3)
        out = run_module("rlhpc.doctor", "--address", ray_cluster.address, env=ray_cluster.env, cwd="/")
    finally:
        os.killpg(extra.pid, signal.SIGKILL)  # the node's processes: its own session
        extra.wait()
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]  # a warning, not a failure
    assert len(re.findall(r"^node .+: ok \(Python [\d.]+, ray 2\.\d+\.\d+, .*Ray: [12] CPUs, 0 GPUs, object store ",
                          out.stdout, re.MULTILINE)) == 2, out.stdout
    assert re.search(r"^node \S+ \(127\.0\.0\.3\): WARN Ray counts 4 CPUs here but this node may run on 2 .*start Ray "
                     r"with --num-cpus=2", out.stdout, re.MULTILINE), out.stdout
    assert "doctor: 3 node(s), 0 failure(s), 1 warning(s)" in out.stdout
    # Without the token: one line.
    no_token = run_module("rlhpc.doctor", "--address", ray_cluster.address,
                          env=clean_env(HOME=tmp_path, RAY_AUTH_MODE="token"), cwd="/")
    assert no_token.returncode == 2
    assert error_lines(no_token.stderr) == [f"error: cannot connect to the Ray cluster at {ray_cluster.address}: Token "
                                            "authentication is enabled but no authentication token was found (the "
                                            "token comes from RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)"]
