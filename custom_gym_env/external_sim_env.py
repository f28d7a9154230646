"""An env whose simulator is a separate process: the pattern for EnergyPlus, SUMO, an FMU or an in-house code.

`ExternalSimEnv` starts its simulator (external_sim_server.py, a small program speaking JSON lines) on a free
loopback port, in the copy's own scratch folder, and talks to it over the socket; close() kills it. What it takes
from rlhpc.envs.identity is what every such env needs:

* which copy it is: `env_config.worker_index`, `.vector_index`, `.copy_id` (unique in the run) and `.scratch_dir`
  (a folder of its own on the node, mode 700) are attributes of the EnvContext, set by the run for every copy (or
  by the env itself when built outside a run);
* a port that only this node can reach (`identity.free_port()`, bound on 127.0.0.1) and a token in the copy's
  private folder that the simulator asks for, so that other users of a shared node cannot drive it;
* a simulator that dies with the env's process, even one killed with SIGKILL (`identity.with_parent_death`).

The task: a point on [-1, 1] must reach a target (observation: position and target; actions: left, stay, right
by 0.1). Reward: the distance gained each step minus 0.01, +1 on reaching the target (within 0.05), which ends
the episode; `max_steps` (40) truncates. A random policy scores about 0.0, the best one about 1.7 (the start
distance, + 1, - 0.01 a step; measured over 300 episodes).

env_config keys (unknown keys are an error):

    step_ms            wall time the simulator takes per step (default 2: --vectorize auto picks async sub-envs)
    max_steps          episode length limit (40)
    crash_every_steps  the simulator exits at every N-th step it serves (0: never), for tests of the env guard
    hang_after_steps   the simulator stops answering from its N-th step on (0: never)
    timeout_s          give up on an answer after this long (0: wait; the run's env guard times steps out)
    start_timeout_s    give up on a simulator that does not listen within this long (30)
    record_dir         a folder where each copy, at each build, leaves a JSON file saying who it is: copy_id,
                       worker_index, vector_index, scratch_dir, port, pid, host, time ("": none; for tests, debugging)
"""

import math
import os
import secrets
import selectors
import socket
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

from rlhpc.envs import identity

SERVER = Path(__file__).resolve().with_name("external_sim_server.py")  # must exist on every node (shared FS)
PORT_TAKEN_EXIT = 98  # external_sim_server.py's exit code for a port someone else took meanwhile
DEFAULTS = {"step_ms": 2.0, "max_steps": 40, "crash_every_steps": 0, "hang_after_steps": 0, "timeout_s": 0.0,
            "start_timeout_s": 30.0, "record_dir": ""}


def options(env_config) -> dict:
    """env_config's keys over the defaults, checked (identity attributes are not keys, so not in the way)."""
    unknown = sorted(set(env_config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"ExternalSimEnv: unknown env_config key {unknown[0]!r}; allowed keys: {', '.join(DEFAULTS)}")
    chosen = {**DEFAULTS, **env_config}
    if not isinstance(chosen["record_dir"], str):
        raise ValueError(f"ExternalSimEnv: env_config record_dir must be a folder, got {chosen['record_dir']!r}")
    for key, value in chosen.items():
        if key == "record_dir":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"ExternalSimEnv: env_config {key} must be a number >= 0, got {value!r}")
    if chosen["max_steps"] < 1:
        raise ValueError(f"ExternalSimEnv: env_config max_steps must be >= 1, got {chosen['max_steps']!r}")
    return chosen


class SimulatorError(RuntimeError):
    """The simulator process died, or did not answer in time."""


class ExternalSimEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)  # position, target
    action_space = gym.spaces.Discrete(3)  # left, stay, right

    def __init__(self, env_config=None):
        env_config = {} if env_config is None else env_config
        # The run gives each copy its identity; built on its own (a test, a notebook), the env takes one itself.
        self.options = options(env_config)
        self._own_identity = getattr(env_config, "copy_id", None) is None
        self.config = identity.assign(env_config)
        self.scratch_dir = Path(self.config.scratch_dir)
        self.process: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.steps = 0
        self._start()
        if self.options["record_dir"]:
            self._record(Path(self.options["record_dir"]))

    # -- the simulator process ------------------------------------------------

    def _start(self) -> None:
        token = secrets.token_hex(16)
        fd = os.open(self.scratch_dir / "sim.token", os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        for _ in range(3):  # a free port can be taken by someone else before the simulator binds it
            self.port = identity.free_port()
            self.process = self._launch(self.port)
            if self._ready(self.process):
                break
            code = self.process.wait()
            if code != PORT_TAKEN_EXIT:
                raise SimulatorError(f"the simulator did not start (exit code {code}); see {self.scratch_dir}"
                                     "/sim.log and sim.stderr")
        else:
            raise SimulatorError("the simulator found its port taken 3 times")
        self.server_pid = self.process.pid
        (self.scratch_dir / "sim.pid").write_text(f"{self.server_pid}\n")  # for whoever must find it (tests)
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.options["start_timeout_s"])
        self.sock.settimeout(self.options["timeout_s"] or None)
        self.sock.sendall((token + "\n").encode())
        self.reader = self.sock.makefile("r")

    def _record(self, folder: Path) -> None:
        """Who this copy is, in a file of its own in `folder` (env_config record_dir): one per build."""
        import json
        import time

        who = {"copy_id": self.config.copy_id, "worker_index": self.config.worker_index,
               "vector_index": self.config.vector_index, "scratch_dir": str(self.scratch_dir), "port": self.port,
               "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        (folder / f"copy-{who['copy_id']}-pid-{who['pid']}-port-{self.port}.json").write_text(json.dumps(who) + "\n")

    def _launch(self, port: int) -> subprocess.Popen:
        o = self.options
        argv = [sys.executable, str(SERVER), "--port", str(port), "--dir", str(self.scratch_dir),
                "--step-ms", str(o["step_ms"]), "--crash-every-steps", str(int(o["crash_every_steps"])),
                "--hang-after-steps", str(int(o["hang_after_steps"]))]
        with open(self.scratch_dir / "sim.stderr", "ab") as stderr:  # a crashing simulator's traceback
            return subprocess.Popen(identity.with_parent_death(argv), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=stderr, cwd=self.scratch_dir)

    def _ready(self, process: subprocess.Popen) -> bool:
        """Waits for the simulator's "ready" line: True when it listens, False when it exited first."""
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(self.options["start_timeout_s"]):
                process.kill()
                process.wait()
                raise SimulatorError(f"the simulator did not listen within {self.options['start_timeout_s']} s; "
                                     f"see {self.scratch_dir}/sim.log")
            line = process.stdout.readline()
        process.stdout.close()
        return line.startswith(b"ready")

    def _request(self, message: dict) -> dict:
        import json

        assert self.sock is not None, "the env is closed"
        try:
            self.sock.sendall((json.dumps(message) + "\n").encode())
            line = self.reader.readline()
        except TimeoutError:
            raise SimulatorError(f"the simulator (pid {self.server_pid}) did not answer within "
                                 f"{self.options['timeout_s']} s") from None
        except OSError:
            line = ""
        if not line:
            raise self._crashed()
        return json.loads(line)

    def _crashed(self) -> SimulatorError:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        return SimulatorError(f"the simulator crashed (pid {self.server_pid}, exit code {code}); its log: "
                              f"{self.scratch_dir / 'sim.log'}")

    # -- Gymnasium ------------------------------------------------------------

    def _observe(self, state: dict):
        return np.array([state["x"], state["target"]], dtype=np.float32)

    def _info(self) -> dict:
        return {"server_pid": self.server_pid, "port": self.port, "copy_id": self.config.copy_id,
                "worker_index": self.config.worker_index, "vector_index": self.config.vector_index}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        state = self._request({"op": "reset", "seed": int(self.np_random.integers(2**31))})
        self.steps = 0
        return self._observe(state), self._info()

    def step(self, action):
        state = self._request({"op": "step", "action": int(action)})
        self.steps += 1
        terminated = bool(state["terminated"])
        truncated = not terminated and self.steps >= self.options["max_steps"]
        return self._observe(state), float(state["reward"]), terminated, truncated, self._info()

    def close(self):
        """Kills the simulator (a hung one does not answer a polite request) and gives the copy's slot back."""
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None
        if self._own_identity:
            identity.release(self.config)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- at interpreter exit anything may be gone already
            pass
