"""Shared fixtures: run the real scripts as subprocesses, and stand up real Ray clusters.

Nothing here mocks Ray: clusters are `ray start` processes on this machine, each node with its
own temp dir (two raylets sharing one collide on a unix socket) and token auth set explicitly
(a leftover ~/.ray/auth_token must not decide whether the suite passes).
"""

import csv
import json
import math
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlhpc.run.results import RETURN_METRIC

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RAY = str(Path(PYTHON).with_name("ray"))
RETURN = RETURN_METRIC  # the 100-episode mean the trainer stops on


def clean_env(**extra) -> dict:
    """The environment of a user who has not configured Ray auth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "ip_head"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(script, *args, env=None, timeout=300, cwd=None):
    """Runs a repo script; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run([PYTHON, str(REPO / script), *map(str, args)], env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, check=False)


def run_module(module, *args, env=None, timeout=300, cwd=None):
    """`python -m MODULE ARGS`, from the repository root unless told (rlhpc.outputs.evaluate, rlhpc.outputs.compare)."""
    return subprocess.run([PYTHON, "-m", module, *map(str, args)], env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or REPO, check=False)


def read_progress(experiment_dir) -> list:
    """All rows of every progress.csv under an experiment dir, numbers parsed."""
    rows = []
    for path in sorted(Path(experiment_dir).glob("*/progress.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                rows.append({k: _number(v) for k, v in row.items()})
    return rows


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def assert_return_is_the_mean_of_the_last_100_episodes(rows, several_runners=False):
    """Rebuilt from RLlib's per-iteration columns (episodes ended, their mean): exact while the window
    holds whole iterations, within a few points when it splits one (its mean stands for the part) or
    when several env runners sampled (RLlib's column is then the mean of the runners' means)."""
    for i, row in enumerate(rows):
        total, count, split = 0.0, 0, False
        for earlier in reversed(rows[:i + 1]):
            ended = earlier["env_runners/num_episodes"]
            if not ended or math.isnan(ended):
                continue
            ended = int(ended)
            take = min(ended, 100 - count)
            split = split or take < ended
            total += take * earlier["env_runners/episode_return_mean"]
            count += take
            if count == 100:
                break
        if not count:  # no episode has ended yet
            assert math.isnan(row[RETURN]), f"iteration {i + 1}"
            continue
        tolerance = 10 if split or several_runners else 1e-6
        assert row[RETURN] == pytest.approx(total / count, abs=tolerance), f"iteration {i + 1}"


def returns_seen(checkpoint: Path) -> float:
    """How many discounted returns --scale-rewards' running variance has taken in, from the learner's saved state."""
    from rlhpc.algo.reward_scaling import RewardScalingPPOLearner

    with open(checkpoint / "learner_group" / "learner" / "state.pkl", "rb") as f:
        return pickle.load(f)[RewardScalingPPOLearner.STATE_KEY]["returns"]["count"]


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def pytest_collection_modifyitems(items):
    """tests/unit is the fast in-process set: its tests carry the `unit` marker (`pytest -m unit`, as `pytest
    tests/unit`); the rest start Python, Ray or a cluster per case."""
    unit = REPO / "tests" / "unit"
    for item in items:
        if unit in item.path.parents:
            item.add_marker(pytest.mark.unit)


# In-process helpers of tests/unit (here, not in a tests/unit/conftest.py: `from conftest import ...` finds one
# module named conftest, this one).
@pytest.fixture
def trainer(monkeypatch, tmp_path, capsys):
    """main() as a script runs it, here: (exit code, stdout, stderr); a user with no Ray auth configured."""
    from rlhpc.train.trainer import main

    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "ip_head", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)

    def run(*argv, num_gpus=0.0):
        try:
            code = main([str(a) for a in argv], description="", num_gpus=num_gpus)
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The trainer with no flags but where to write (PPO on CartPole-v0 to its threshold, 195), trained once for
    the session: test_trainer.py checks the run, test_after_training.py evaluates and compares it.
    -> (the finished process, storage dir, HOME without a token when it started)."""
    base = tmp_path_factory.mktemp("default_run")
    home = base / "home"
    home.mkdir()
    storage = base / "results"
    out = run_script("simple_example/simple_trainer.py", "--storage-path", storage, env=clean_env(HOME=home),
                     timeout=600)
    return out, storage, home


@pytest.fixture
def home_without_token(tmp_path):
    """HOME with no ~/.ray/auth_token: Ray must cope (it creates one for local runs)."""
    home = tmp_path / "home"
    home.mkdir()
    return home


def _free_port(low=6400, high=7400) -> int:
    # The GCS port must be outside Ray's worker port range (10002-19999).
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class RayCluster:
    """A real multi-node Ray cluster on this machine: one `ray start --block` per node."""

    def __init__(self, cpus_per_node=(1, 2), resources=None):
        self.base = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: unix socket paths <= 107 bytes
        self.token_path = self.base / "token"
        with open(os.open(self.token_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_hex(32))
        self.env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=self.token_path)
        self.port = _free_port()
        self.procs = []
        self.cpus_per_node = cpus_per_node
        resources = resources or [None] * len(cpus_per_node)
        try:
            self._start_node(0, cpus_per_node[0], resources[0], head=True)
            self.address = f"127.0.0.1:{self.port}"
            for i, cpus in enumerate(cpus_per_node[1:], start=1):
                self._start_node(i, cpus, resources[i])
            self.wait_for_nodes(len(cpus_per_node))
        except BaseException:
            self.shutdown()
            raise

    def _start_node(self, index, cpus, resources, head=False):
        cmd = [RAY, "start", "--block", f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={self.base}/n{index}",
               f"--node-ip-address=127.0.0.{index + 1}", "--object-store-memory=150000000", "--disable-usage-stats"]
        if head:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address=127.0.0.1:{self.port}"]
        if resources:
            cmd += [f"--resources={json.dumps(resources)}"]
        log = open(self.base / f"n{index}.log", "w")  # noqa: SIM115 -- the node process keeps writing it
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        if head:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError((self.base / "n0.log").read_text()) from None
                    time.sleep(0.2)
            raise RuntimeError("Ray head did not open its port in 60 s")

    def query(self, code: str, env=None):
        """Runs a snippet connected to the cluster (as a separate driver); returns its JSON output."""
        snippet = ("import json, ray, logging\n"
                   f"ray.init(address={self.address!r}, logging_level=logging.ERROR)\n" + code)
        out = subprocess.run([PYTHON, "-c", snippet], env=env or self.env, capture_output=True, text=True,
                             timeout=60, check=False)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    def nodes(self):
        return self.query("print(json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], "
                          "'alive': n['Alive']} for n in ray.nodes()]))")

    def actors(self):
        """Every actor the GCS remembers (dead ones too): class name, the node it ran on and its process there."""
        return self.query("import ray._private.state as s\n"
                          "print(json.dumps([{'id': i, 'class': a['ActorClassName'], 'node': a['Address']['NodeID'], "
                          "'state': a['State'], 'pid': a['Pid']} for i, a in s.actors().items()]))")

    def wait_for_nodes(self, count, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if sum(n["alive"] for n in self.nodes()) >= count:
                    return
            except RuntimeError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"only some of {count} nodes joined in {timeout} s")

    def shutdown(self):
        # `ray start --block` ends its node's processes on SIGTERM; never `ray stop` (other clusters).
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3  # `ray start --block` takes ~30 s to exit after TERM; its node is gone
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_processes_mentioning(str(self.base))
        shutil.rmtree(self.base, ignore_errors=True)


def _kill_processes_mentioning(text: str):
    """Stragglers that left the process group still carry our unique temp dir in their argv."""
    me = os.getpid()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        try:
            if text in (pid_dir / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(pid_dir.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def ray_cluster():
    """Head (1 CPU) + worker (2 CPUs): a 2-node cluster, torn down after the module's tests."""
    cluster = RayCluster(cpus_per_node=(1, 2))
    yield cluster
    cluster.shutdown()

# Slurm test cluster (issue 5): the session fixture `slurm_cluster`, defined in tests/conftest_slurm.py.
from conftest_slurm import slurm_cluster  # noqa: F401


def wandb_offline_runs(trial_dir) -> list:
    """The offline W&B runs in a trial dir, each as {"run": its run record, "config": {...}, "history": [rows]},
    read with W&B's own record schema (wandb.proto) from its run-*.wandb file: a LevelDB-style log, a 7-byte
    header, then 32 KiB blocks of chunks (crc32, length, type, data). wandb 0.31 ships no Python reader."""
    import struct

    from wandb.proto import wandb_internal_pb2

    def value(items):
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}

    runs = []
    for path in sorted(Path(trial_dir).glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B", data[:7]
        run, pending, pos, block = {"config": {}, "history": []}, b"", 7, 32768
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
                pos += block - pos % block
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            pending += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind not in (1, 4):  # FULL or LAST end a record; FIRST and MIDDLE continue it
                continue
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["run"] = record.run
            elif kind == "config":
                run["config"].update(value(record.config.update))
            elif kind == "history":
                run["history"].append(value(record.history.item))
        runs.append(run)
    return runs


def simulator_pids(text: str) -> list:
    """The processes whose command line names `text` (our scratch root), found in /proc."""
    pids = []
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
                state = (pid_dir / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if text in cmdline and "external_sim_server" in cmdline and state != "Z":
                pids.append(int(pid_dir.name))
    return pids


def lines_until(proc, start: str) -> list:
    """The lines a running trainer (Popen, text stdout) printed, up to the first that starts with `start` (e.g.
    "iter    1": signal it then)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(start):
            break
    return seen
