"""The Slurm job's decisions (rlhpc.slurm.job, rlhpc.slurm.nodes, rlhpc.run.job_status), in-process, in a second.

slurm/ray_cluster.sh runs them as `python -m rlhpc.slurm.job ...`; tests/test_slurm.py runs the templates on a real
cluster. Here each rule is checked on its own, with real files in tmp_path.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlhpc.errors import UserError
from rlhpc.run import job_status
from rlhpc.run.cli import redacted, without_token
from rlhpc.slurm import job, nodes

REPO = Path(__file__).resolve().parents[2]


def settings(**env) -> job.Settings:
    return job.Settings.from_env({k: str(v) for k, v in env.items()})


def status_file(tmp_path, ending=job_status.STOPPED, iteration=7, experiment="/results/chain") -> str:
    path = tmp_path / "trainer_status.json"
    path.write_text(json.dumps({"experiment": experiment, "ending": ending, "iteration": iteration}))
    return str(path)


# --- ports and addresses --------------------------------------------------------------------------------------

def test_ports_come_from_the_job_id_and_stay_below_rays_worker_ports():
    assert nodes.default_port(1234) == 6379 + 234
    assert nodes.default_port("2234") == nodes.default_port(1234)  # 1000 ids apart: the same; choose_ports moves on
    assert nodes.default_port(None) == 6379
    assert nodes.ray_ports(6613) == (6613, 7613, 8613)
    assert nodes.ray_ports(8001) == (8001, 9001, 10001)
    with pytest.raises(nodes.PortError, match=r"RLHPC_RAY_PORT=8002: need 1024 <= port and port \+ 2000 < 10002"):
        nodes.ray_ports(8002)
    with pytest.raises(nodes.PortError, match="RLHPC_RAY_PORT=80: need 1024"):
        nodes.ray_ports(80)
    every_default = {nodes.ray_ports(nodes.default_port(j))[-1] for j in range(1000)}
    assert max(every_default) < nodes.RAY_WORKER_PORTS


def test_a_given_port_wins_and_a_bad_one_is_one_clear_error():
    assert nodes.port_setting({"SLURM_JOB_ID": "1234", "RLHPC_RAY_PORT": "7000"}) == 7000
    assert nodes.port_setting({"SLURM_JOB_ID": "1234", "RLHPC_RAY_PORT": ""}) == 6613
    with pytest.raises(nodes.PortError, match="RLHPC_RAY_PORT=abc: expected a port number"):
        nodes.port_setting({"RLHPC_RAY_PORT": "abc"})


def test_the_next_port_wraps_within_the_thousand():
    assert nodes.next_port(6613) == 6614
    assert nodes.next_port(7378) == 6379


def test_ports_another_job_holds_are_skipped_unless_the_port_was_given(capsys):
    env = {"SLURM_JOB_ID": "1234"}
    taken = {6613, 7614}  # 6613 itself, then 6614's client port
    assert job.choose_ports(env, taken.__contains__, "n1") == (6615, 7615, 8615)
    err = capsys.readouterr().err
    assert "ray_cluster.sh: port 6613 (or +1000, +2000) on n1 is in use, by another job's Ray? Trying the next one" \
        in err and "port 6614 (or +1000, +2000)" in err
    with pytest.raises(UserError, match=r"^port 7000 \(or \+1000, \+2000\) on n1 is in use, by another job's Ray\? "
                                        "Set RLHPC_RAY_PORT to a free port$"):
        job.choose_ports({**env, "RLHPC_RAY_PORT": "7000"}, {7000}.__contains__, "n1")
    with pytest.raises(UserError, match="Set RLHPC_RAY_PORT to a free port"):
        job.choose_ports(env, lambda port: True, "n1")  # every default port taken: give up after PORT_TRIES


def test_a_port_answers_when_something_listens_there():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert nodes.port_answers("127.0.0.1", port)
    assert not nodes.port_answers("127.0.0.1", port)


def test_the_node_address_is_the_first_ipv4_that_is_not_loopback():
    assert nodes.pick_ipv4(["127.0.1.1", "fe80::1", "10.250.0.11", "10.0.0.5"]) == "10.250.0.11"
    assert nodes.pick_ipv4(["127.0.0.1", "::1", "host.example"]) is None
    assert nodes.pick_ipv4([]) is None


# --- time left ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("1:30", 90), ("2:00:05", 7205), ("1-00:00:10", 86410), ("45", 45),
                                               (" 0:59\n", 59), ("UNLIMITED", None), ("NOT_SET", None), ("", None),
                                               ("1:x", None)])
def test_squeue_time_left_in_seconds(text, seconds):
    assert job.seconds_left(text) == seconds


# --- the status file and the endings ----------------------------------------------------------------------------

def test_the_status_file_is_read_when_it_is_the_trainers(tmp_path):
    assert job_status.read(status_file(tmp_path)) == job_status.Status("/results/chain", job_status.STOPPED, 7)
    assert job_status.read(str(tmp_path / "missing.json")) is None
    for text in ("", "{not json", "[]", '{"ending": "stopped"}'):
        (tmp_path / "bad.json").write_text(text)
        assert job_status.read(str(tmp_path / "bad.json")) is None, text
    assert set(job_status.ENDINGS) == {"running", "done", "stopped", "failed"}  # what old status files say


# --- the trainer's command line ---------------------------------------------------------------------------------

def test_resume_flags_are_dropped_in_every_form():
    argv = ["python", "t.py", "--resume", "--name", "x", "--resume", "old", "--resume=other", "--seed", "1"]
    assert job.without_resume(argv) == ["python", "t.py", "--name", "x", "--seed", "1"]
    assert job.without_resume(["t.py", "--resume"]) == ["t.py"]


def test_the_next_job_of_a_chain_resumes_the_run_the_previous_one_stopped(tmp_path):
    status = job_status.read(status_file(tmp_path))
    argv, lines = job.trainer_argv(["python", "t.py", "--name", "chain", "--resume"],
                                   settings(SLURM_RESTART_COUNT=1), status)
    assert argv == ["python", "t.py", "--name", "chain", "--resume", "/results/chain"]
    assert lines == ["job 2 of at most 10 in this chain: resuming /results/chain after iteration 7 (the previous "
                     "job stopped it: stopped)", "running: python t.py --name chain --resume /results/chain"]


def test_the_first_job_runs_the_args_as_given_and_says_it_may_requeue(tmp_path):
    argv = ["python", "t.py", "--name", "n"]
    # a status file left by an earlier job of the same id does not count in the first job of a chain
    assert job.trainer_argv(argv, settings(), None) == (argv, [
        "job 1 of at most 10 in this chain (the job requeues itself at the wall time until the run is done; "
        "RLHPC_REQUEUE=0 turns that off)", "running: python t.py --name n"])
    assert job.trainer_argv(argv, settings(RLHPC_REQUEUE=0), None) == (argv, ["running: python t.py --name n"])
    no_run = job_status.Status("", job_status.RUNNING, 0)
    assert job.trainer_argv(argv, settings(SLURM_RESTART_COUNT=3, RLHPC_MAX_JOBS=5), no_run)[1][0].startswith(
        "job 4 of at most 5 in this chain (the job requeues")


def test_the_log_never_shows_the_token():
    argv = ["python", "t.py", "--redis-password", "s3cret", "--redis-pass=s3cret", "--red", "s3cret", "--name", "n"]
    assert redacted(argv) == ["python", "t.py", "--redis-password", "<token>", "--redis-pass=<token>", "--red",
                              "<token>", "--name", "n"]
    assert without_token(argv) == ["python", "t.py", "--name", "n"]
    _, lines = job.trainer_argv(argv, settings(RLHPC_REQUEUE=0), None)
    assert "s3cret" not in "".join(lines)


# --- requeue or not ---------------------------------------------------------------------------------------------

def decide(tmp_path, usr1=True, left=None, ending=job_status.STOPPED, **env):
    return job.decide_requeue(usr1, left, settings(**env), job_status.read(status_file(tmp_path, ending)))


def test_the_wall_time_stopping_an_unfinished_run_requeues(tmp_path):
    assert decide(tmp_path, left=100) == (True, [
        "requeueing: the wall time stopped the run after iteration 7; job 2 of at most 10 resumes it"])
    requeue, lines = decide(tmp_path, left=None, SLURM_RESTART_COUNT=2)
    assert requeue and lines == [
        "squeue did not say how much time the job had left at USR1: taking it for the wall time",
        "requeueing: the wall time stopped the run after iteration 7; job 4 of at most 10 resumes it"]
    assert decide(tmp_path, left=300)[0] and not decide(tmp_path, left=301)[0]  # RLHPC_WALLTIME_LEFT, inclusive


def test_no_requeue_without_usr1_for_an_early_usr1_when_off_or_for_a_run_not_stopped(tmp_path):
    assert decide(tmp_path, usr1=False) == (False, [])  # ended by itself, or by a plain scancel (TERM)
    assert decide(tmp_path, left=900, RLHPC_WALLTIME_LEFT=600) == (False, [
        "USR1 came with 900s left, more than RLHPC_WALLTIME_LEFT=600s: a request to stop, not the wall time; "
        "not requeueing"])
    assert decide(tmp_path, left=10, RLHPC_REQUEUE=0) == (False, [
        "RLHPC_REQUEUE=0: not requeueing; resubmit with --resume to go on"])
    for ending in (job_status.DONE, job_status.FAILED, job_status.RUNNING):
        assert decide(tmp_path, left=10, ending=ending) == (False, [
            f"not requeueing: the run ended {ending} (see above)"])
    assert job.decide_requeue(True, 10, settings(), None) == (False, [
        "not requeueing: the run ended without saying how (see above)"])


def test_the_chain_ends_at_rlhpc_max_jobs(tmp_path):
    assert decide(tmp_path, left=10, SLURM_RESTART_COUNT=2, RLHPC_MAX_JOBS=3) == (False, [
        "not requeueing: this was job 3 of at most RLHPC_MAX_JOBS=3; resubmit with --resume /results/chain to go on"])
    assert decide(tmp_path, left=10, SLURM_RESTART_COUNT=1, RLHPC_MAX_JOBS=3)[0]


def test_bad_settings_are_one_clear_error():
    with pytest.raises(UserError, match="^RLHPC_MAX_JOBS=ten: expected a whole number$"):
        settings(RLHPC_MAX_JOBS="ten")
    with pytest.raises(UserError, match="^RLHPC_WALLTIME_LEFT=-5: expected a whole number$"):
        settings(RLHPC_WALLTIME_LEFT=-5)
    assert settings(RLHPC_MAX_JOBS="", RLHPC_WALLTIME_LEFT=" 60 ") == job.Settings(max_jobs=10, walltime_left=60)


# --- the preflight and the cluster report -----------------------------------------------------------------------

def test_the_preflight_gets_the_trainers_storage_path_and_gpus_only():
    argv = ["python", "t.py", "--storage-path", "/scratch/r", "--num-gpus=1", "--name", "n", "--num-gpus-x", "2"]
    assert job.doctor_flags(argv) == ["--storage-path", "/scratch/r", "--num-gpus=1"]


def test_the_cluster_report_lists_nodes_with_their_custom_resources():
    alive = [{"NodeManagerHostname": "n2", "NodeManagerAddress": "10.250.0.12",
              "Resources": {"CPU": 36.0, "memory": 1e9, "rollout_node": 1000.0, "node:10.250.0.12": 1.0}},
             {"NodeManagerHostname": "n1", "NodeManagerAddress": "10.250.0.11",
              "Resources": {"CPU": 4.0, "GPU": 1.0, "object_store_memory": 1e8}}]
    assert job.cluster_lines(alive) == ["Ray cluster: 2 nodes, 40 CPUs, 1 GPUs",
                                        "  node n1 10.250.0.11: CPUs=4 GPUs=1",
                                        "  node n2 10.250.0.12: CPUs=36 GPUs=0 rollout_node=1000"]


# --- the command the shell runs ---------------------------------------------------------------------------------

def run_job(*args, stdin="", **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RLHPC_", "SLURM_"))}
    full_env.update(PYTHONPATH=str(REPO), **{k: str(v) for k, v in env.items()})
    return subprocess.run([sys.executable, "-m", "rlhpc.slurm.job", *args], input=stdin, env=full_env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_shell_gets_the_argv_nul_separated_and_the_status_is_forgotten_once_read(tmp_path):
    path = status_file(tmp_path)
    argv = ["python", "t.py", "--name", "a b", "--redis-password", "s3cret", "--resume=x"]
    out = run_job("trainer-argv", stdin="".join(a + "\0" for a in argv), RLHPC_STATUS_FILE=path,
                  SLURM_RESTART_COUNT=1)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\0")[:-1] == [*argv[:-1], "--resume", "/results/chain"]
    assert "s3cret" not in out.stderr and "running: python t.py --name a b --redis-password <token>" in out.stderr
    assert not Path(path).exists()


def test_the_shell_gets_exit_0_to_requeue_and_one_line_for_bad_input(tmp_path):
    path = status_file(tmp_path)
    assert run_job("requeue", "--usr1-left=100", RLHPC_STATUS_FILE=path).returncode == 0
    assert run_job("requeue", "--usr1-left=", RLHPC_STATUS_FILE=path, RLHPC_REQUEUE=0).returncode == 1
    assert run_job("ports", SLURM_JOB_ID=1234).stdout.split() == ["6613", "7613", "8613"]
    bad = run_job("ports", SLURM_JOB_ID=1234, RLHPC_RAY_PORT=9999)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ("ray_cluster.sh: RLHPC_RAY_PORT=9999: need 1024 <= port and port + 2000 < 10002 "
                          "(Ray's worker ports)\n")
