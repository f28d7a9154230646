"""A real Slurm cluster for the tests: the `slurm_cluster` session fixture and job helpers.

`tests/slurm/cluster.sh up` stands up 3 Slurm nodes on this machine (one network namespace each); tests
submit the real sbatch templates to it. Where that cannot run (not root, no `ip netns`) the fixture skips
with the script's reason. Imported by tests/conftest.py.
"""

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
SKIP = 77  # cluster.sh's "cannot run here"


@dataclass
class SlurmJob:
    job_id: str
    exit_code: int    # the batch script's exit status (ExitCode=N:signal)
    signal: int
    state: str        # COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    output: str       # the slurm-<id>.out text
    seconds: float    # from submission until the job left the queue
    restarts: int = 0  # times it was requeued


class SlurmCluster:
    def __init__(self, base: Path):
        self.base = base
        self.nodes = [f"n{k}" for k in range(1, int(os.environ.get("SLURMCI_NODES", "3")) + 1)]
        self.env = {**os.environ, "SLURM_CONF": str(base / "slurm.conf")}
        # Jobs get the Python environment the tests run in (the templates activate $RLHPC_VENV).
        if sys.prefix != sys.base_prefix:
            self.env["RLHPC_VENV"] = sys.prefix

    def processes(self) -> list:
        """(node, pid, argv) of every process in a node's network namespace: the daemons and all jobs."""
        nodes = {os.stat(f"/run/netns/{n}").st_ino: n for n in self.nodes if os.path.exists(f"/run/netns/{n}")}
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                node = nodes.get(os.stat(proc / "ns" / "net").st_ino)
                if node:
                    argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                    found.append((node, int(proc.name), [a for a in argv if a]))
            except OSError:  # gone meanwhile
                pass
        return found

    def stray_processes(self) -> list:
        """Processes on the nodes other than slurmd: what jobs left behind."""
        return [p for p in self.processes() if not (p[2] and p[2][0].endswith("slurmd"))]

    def run(self, *cmd, timeout=30) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode:
            raise RuntimeError(f"{' '.join(map(str, cmd))}: {out.stderr.strip()}")
        return out.stdout

    def submit(self, script, *args, options=(), env=None, output_dir) -> tuple:
        """sbatch from the repository root; returns (job id, path of its output file)."""
        pattern = str(Path(output_dir) / "slurm-%j.out")
        cmd = ["sbatch", "--parsable", f"--output={pattern}", *options, str(script), *map(str, args)]
        out = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                             cwd=REPO, timeout=30, check=False)
        if out.returncode:
            raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
        job_id = out.stdout.strip().split(";")[0]
        return job_id, Path(pattern.replace("%j", job_id))

    def wait(self, job_id, output_path, timeout=600, on_poll=None) -> SlurmJob:
        """Polls squeue every 0.25 s (`sbatch --wait` polls far more slowly), then reads ExitCode."""
        t0 = time.monotonic()
        while self.run("squeue", "-h", "-j", job_id).strip():
            if on_poll is not None:
                on_poll()
            if time.monotonic() - t0 > timeout:
                subprocess.run(["scancel", job_id], env=self.env, timeout=30, check=False)
                raise TimeoutError(f"job {job_id} still queued/running after {timeout} s (cancelled)")
            time.sleep(0.25)
        seconds = time.monotonic() - t0
        info = self.run("scontrol", "show", "job", job_id)
        # A heterogeneous job lists every component; the batch script's status is that of component 0.
        record = next(r for r in info.split("\n\n") if re.search(rf"\bJobId={job_id}\b", r))
        code, sig = map(int, re.search(r"\bExitCode=(\d+):(\d+)", record).groups())
        state = re.search(r"\bJobState=(\S+)", record).group(1)
        restarts = int(re.search(r"\bRestarts=(\d+)", record).group(1))
        output = Path(output_path).read_text() if Path(output_path).exists() else ""
        return SlurmJob(job_id, code, sig, state, output, seconds, restarts)

    def sbatch(self, script, *args, options=(), env=None, output_dir, timeout=600, on_poll=None) -> SlurmJob:
        """Submit and wait: the job's exit code and log."""
        job_id, path = self.submit(script, *args, options=options, env=env, output_dir=output_dir)
        return self.wait(job_id, path, timeout=timeout, on_poll=on_poll)


def _cluster_sh(command, env):
    return subprocess.run(["bash", str(CLUSTER_SH), command], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running 3-node Slurm cluster (2 CPUs per node); torn down at the end unless it was already up."""
    base = Path(os.environ.get("SLURMCI_BASE", "/tmp/slurmci"))
    env = {**os.environ, "SLURMCI_BASE": str(base)}
    was_up = _cluster_sh("status", env).returncode == 0
    up = _cluster_sh("up", env)
    if up.returncode == SKIP:
        pytest.skip(f"no Slurm test cluster: {up.stderr.strip()}")
    if up.returncode:
        raise RuntimeError(f"tests/slurm/cluster.sh up failed:\n{up.stdout}{up.stderr}")
    yield SlurmCluster(base)
    if not was_up and os.environ.get("SLURMCI_KEEP") != "1":
        _cluster_sh("down", env)
