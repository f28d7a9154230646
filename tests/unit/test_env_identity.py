"""Every env copy knows who it is (rlhpc.envs.identity), and the external-simulator example keeps to the rules a
shared node needs (custom_gym_env/external_sim_env.py): copies built as RLlib builds them (one EnvContext shared
by all copies of a runner, each copy in its own Gymnasium async sub-env process) get distinct identities and
private folders; a rebuilt copy gets its identity back; simulator ports answer on loopback only; processes die
with their parents."""

import ctypes
import gc
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import PYTHON, REPO

from custom_gym_env.external_sim_env import SERVER, ExternalSimEnv
from rlhpc.envs import identity
from rlhpc.envs.gym_compat import check_and_adapt

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="node-local folders, prctl: Linux")
NUM_ENVS = 4


class Context(dict):
    """RLlib's EnvContext as make_env builds it (ray.rllib.env.env_context, without importing RLlib): the
    config as a dict, and worker_index/vector_index attributes; vector_index is 0 for every copy."""

    def __init__(self, config, worker_index):
        super().__init__(config)
        self.worker_index, self.vector_index, self.num_workers, self.remote = worker_index, 0, 2, False


def pdeathsig() -> int:
    value = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


class WhoAmI(gym.Env):
    """A copy whose reset tells who it is, as a simulator would use it."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(1)

    def __init__(self, env_config):
        self.config = identity.assign(env_config, num_envs=NUM_ENVS)  # what the run's env guard does per copy
        assert set(self.config) == {"size"}, "the identity is attributes, not keys: gymnasium.make(id, **config)"

    def reset(self, *, seed=None, options=None):
        c = self.config
        return 0, {"worker_index": c.worker_index, "vector_index": c.vector_index, "copy_id": c.copy_id,
                   "scratch_dir": c.scratch_dir, "pid": os.getpid(), "pdeathsig": pdeathsig()}

    def step(self, action):
        return 0, 0.0, True, False, {}


@pytest.fixture
def run(monkeypatch, tmp_path):
    """A run of its own: identity folders under tmp_path."""
    monkeypatch.setenv(identity.ROOT_VAR, str(tmp_path / "root"))
    monkeypatch.setenv(identity.RUN_VAR, "run-1")
    monkeypatch.delenv(identity.RUNNER_VAR, raising=False)
    return tmp_path / "root" / "run-1"


def runner(worker_index: int):
    """One env runner's vector env as RLlib 2.60 builds it with async sub-envs: the same context for every copy."""
    context = Context({"size": 1}, worker_index)
    return gym.vector.AsyncVectorEnv([partial(WhoAmI, context)] * NUM_ENVS, context="fork")


def copies(vector_env) -> list[dict]:
    _, info = vector_env.reset()
    keys = ("worker_index", "vector_index", "copy_id", "scratch_dir", "pid", "pdeathsig")
    return [{key: info[key][i].item() if isinstance(info[key][i], np.generic) else info[key][i] for key in keys}
            for i in range(vector_env.num_envs)]


def rebuilt(worker_index: int) -> dict:
    """A copy built again in a new sub-env process of the same runner (this process)."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(_who, (worker_index,))


def _who(worker_index):
    return WhoAmI(Context({"size": 1}, worker_index)).reset()[1]


def test_two_runners_of_four_copies_are_eight_identities_with_private_folders(run):
    # Forking sub-env processes from a pytest process that other tests filled with threads (Ray, gRPC, torch)
    # can deadlock the children (20 min in the full suite): the forks happen in a fresh interpreter.
    if os.environ.get("RLHPC_TEST_FRESH_PROCESS") != "1":
        this = f"{__file__}::test_two_runners_of_four_copies_are_eight_identities_with_private_folders"
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", this],
                             env={**os.environ, "RLHPC_TEST_FRESH_PROCESS": "1"}, capture_output=True, text=True,
                             timeout=180, cwd=REPO, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        return
    envs = [runner(1), runner(2)]
    try:
        seen = [copy for env in envs for copy in copies(env)]
        assert sorted((c["worker_index"], c["vector_index"]) for c in seen) == [(w, i) for w in (1, 2)
                                                                                 for i in range(NUM_ENVS)]
        assert sorted(c["copy_id"] for c in seen) == list(range(4, 12))  # worker_index * num_envs + vector_index
        folders = {c["scratch_dir"] for c in seen}
        assert len(folders) == 8
        for folder in map(Path, folders):
            assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            assert run in folder.parents
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert {c["pdeathsig"] for c in seen} == {signal.SIGKILL}  # sub-env processes die with their runner

        # One copy's process dies (a crash, a kill); the copy built in its place is the same copy.
        dead = next(c for c in seen if c["worker_index"] == 1 and c["vector_index"] == 2)
        os.kill(dead["pid"], signal.SIGKILL)
        again = rebuilt(1)
        assert (again["vector_index"], again["copy_id"], again["scratch_dir"]) == (2, 6, dead["scratch_dir"])
        assert again["pid"] != dead["pid"]
    finally:
        for env in envs:  # killed, not asked to close: a forked child of a process with threads may be stuck
            for process in env.processes:
                process.kill()
            env.close(terminate=True)
    assert identity.cleanup(run) == [], "runner folders of this (live) process are kept"


def test_copies_in_one_process_rebuild_and_release(run):
    """Sync sub-envs: every copy of a runner in the runner's own process, with one shared context."""
    shared = Context({"size": 1}, 3)
    built = [identity.assign(shared, num_envs=NUM_ENVS) for _ in range(NUM_ENVS)]
    assert [c.vector_index for c in built] == [0, 1, 2, 3] and shared.vector_index == 0  # RLlib's object untouched
    assert [c.copy_id for c in built] == [12, 13, 14, 15]
    assert identity.assign(built[2]) is built[2]  # a rebuild with the same context: the same copy
    identity.release(built[2])  # closed for good: the next copy built here takes index 2
    again = identity.assign(shared, num_envs=NUM_ENVS)
    assert (again.vector_index, again.copy_id, again.scratch_dir) == (2, 14, built[2].scratch_dir)
    del built[2]
    gc.collect()  # the old copy's context goes: the new copy keeps index 2, so a fifth copy is one too many
    with pytest.warns(UserWarning, match="more than its 4 env copies"):
        fifth = identity.assign(shared, num_envs=NUM_ENVS)
    assert (fifth.vector_index, fifth.copy_id) == (4, identity.OVERFLOW + 3 * identity.STRIDE + 4)
    plain = identity.assign({"a": 1})  # a plain dict (outside RLlib): the same attributes, worker 0
    assert (plain.worker_index, plain.vector_index, dict(plain)) == (0, 0, {"a": 1})
    assert identity.copy_id_of(2, 5) == 2 * identity.STRIDE + 5  # num_envs unknown: still unique


def test_a_dead_runners_folder_goes_and_a_live_ones_stays(run):
    child = subprocess.run([PYTHON, "-c", "from rlhpc.envs import identity; import os; "
                            "os._exit(0 if identity.assign({}).scratch_dir else 1)"],  # as if killed: no atexit
                           cwd=REPO, timeout=60)
    assert child.returncode == 0
    left = list(run.glob("runner-0-*"))
    assert len(left) == 1
    assert identity.cleanup(run) == left and not run.exists()  # the run's folder too, once empty
    mine = identity.assign({})
    assert identity.cleanup(run) == [] and Path(mine.scratch_dir).is_dir()


def test_the_identity_reaches_the_users_creator_through_the_adapters(run):
    got = []

    def make(env_config):  # a creator function, as register_env takes
        got.append(env_config)
        return WhoAmI(env_config)

    context = identity.assign(Context({"size": 1}, 1), num_envs=NUM_ENVS)
    check_and_adapt(make, context)(context)
    assert got[-1] is context and got[-1].copy_id == 4


def non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the interface a route would use
            address = s.getsockname()[0]
        except OSError:
            address = socket.gethostbyname(socket.gethostname())
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.fixture
def sim_env(run):
    made = []

    def make(**config):
        made.append(ExternalSimEnv({"step_ms": 0, **config}))
        return made[-1]

    yield make
    for env in made:
        env.close()


def test_a_simulator_port_answers_on_loopback_only_and_only_with_the_token(tmp_path):
    (tmp_path / "sim.token").write_text("secret\n")
    port = identity.free_port()
    server = subprocess.Popen([PYTHON, str(SERVER), "--port", str(port), "--dir", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == f"ready {port}\n"
        with pytest.raises(ConnectionRefusedError):  # from another machine (this one's own address stands in)
            socket.create_connection((non_loopback_address(), port), timeout=5)
        # Another user of the node reaches the loopback port, but cannot read the copy's folder: no token, no service.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as intruder:
            intruder.sendall(b'guess\n{"op": "reset"}\n')
            assert intruder.recv(100) == b""  # hung up on
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b'secret\n{"op": "reset", "seed": 1}\n')
            assert b'"target"' in client.recv(1000)
            with pytest.raises(ConnectionRefusedError):  # once its client is in, nobody else can connect
                socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        server.kill()
        server.wait()
    assert "refused a client without the token" in (tmp_path / "sim.log").read_text()


def test_the_example_env_runs_its_simulator_in_the_copys_folder(sim_env):
    env = sim_env()
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["server_pid"] == env.server_pid
    assert Path(env.config.scratch_dir) == env.scratch_dir and (env.scratch_dir / "sim.log").exists()
    assert stat.S_IMODE((env.scratch_dir / "sim.token").stat().st_mode) == 0o600
    assert int((env.scratch_dir / "sim.pid").read_text()) == env.server_pid
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", env.port), timeout=5)
    second = sim_env()
    assert (second.config.vector_index, second.scratch_dir != env.scratch_dir, second.port != env.port) == (1, True,
                                                                                                          True)
    with pytest.raises(ValueError, match="unknown env_config key 'step_msec'"):
        ExternalSimEnv({"step_msec": 1})


def test_a_simulator_crash_is_an_error_and_close_kills_the_simulator(sim_env):
    env = sim_env(crash_every_steps=3)
    env.reset(seed=0)
    env.step(1), env.step(1)
    with pytest.raises(RuntimeError, match=r"simulator crashed \(pid \d+, exit code 3\); its log: .*sim.log"):
        env.step(1)
    hung = sim_env(hang_after_steps=1, timeout_s=0.5)
    hung.reset(seed=0)
    with pytest.raises(RuntimeError, match="did not answer within 0.5 s"):
        hung.step(1)
    pid = hung.server_pid
    hung.close()
    assert not identity._alive(pid)


def test_a_simulator_dies_with_the_process_that_started_it(run):
    """The env's process killed with SIGKILL (no close, no atexit): its simulator goes too."""
    parent = subprocess.Popen(
        [PYTHON, "-c", "import subprocess, sys, time; from rlhpc.envs import identity; "
         "p = subprocess.Popen(identity.with_parent_death(['sleep', '60'])); print(p.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    time.sleep(0.2)  # the trampoline has exec'd sleep
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while identity._alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not identity._alive(grandchild)
