"""Where a job's Ray listens: its ports (from the Slurm job id) and each node's IPv4 address, for the job and doctor.

slurm/ray_cluster.sh asks for these through `python -m rlhpc.slurm.job ports|node-ip`, and the doctor checks the
same values, so the rule is written once.
"""

import socket
import subprocess
from collections.abc import Mapping

BASE_PORT = 6379  # Ray's default GCS port; job N uses BASE_PORT + N % PORT_SPREAD
PORT_SPREAD = 1000
CLIENT_OFFSET = 1000  # the Ray client server: GCS port + 1000
AGENT_OFFSET = 2000  # the dashboard agent (it listens even with the dashboard off): GCS port + 2000
RAY_WORKER_PORTS = 10002  # where Ray's worker ports (10002-19999) begin: ours stay below
LOWEST_PORT = 1024  # below: privileged ports


class PortError(ValueError):
    """A port setting that cannot work; the message says why."""


def default_port(job_id: str | int | None) -> int:
    """The GCS port of a job: two jobs whose heads share a node differ unless their ids differ by a multiple of
    1000 (then the job moves on to next_port)."""
    digits = str(job_id or "0").split("_")[0]  # an array task's ARRAYJOB_TASK: its own job id comes first
    return BASE_PORT + (int(digits) if digits.isdigit() else 0) % PORT_SPREAD


def ray_ports(gcs_port: int) -> tuple:
    """(GCS, client server, dashboard agent) ports for a GCS port; PortError when they reach Ray's worker ports."""
    ports = (gcs_port, gcs_port + CLIENT_OFFSET, gcs_port + AGENT_OFFSET)
    if gcs_port < LOWEST_PORT or ports[-1] >= RAY_WORKER_PORTS:
        raise PortError(f"RLHPC_RAY_PORT={gcs_port}: need {LOWEST_PORT} <= port and port + {AGENT_OFFSET} < "
                        f"{RAY_WORKER_PORTS} (Ray's worker ports)")
    return ports


def port_setting(env: Mapping) -> int:
    """The GCS port a job's environment asks for: RLHPC_RAY_PORT, else the job id's default."""
    given = env.get("RLHPC_RAY_PORT") or ""
    if not given:
        return default_port(env.get("SLURM_JOB_ID"))
    if not given.isdigit():
        raise PortError(f"RLHPC_RAY_PORT={given}: expected a port number")
    return int(given)


def next_port(gcs_port: int) -> int:
    """The default port to try when gcs_port (or +1000, +2000) is taken: the next one, wrapping within the spread."""
    return BASE_PORT + (gcs_port - BASE_PORT + 1) % PORT_SPREAD


def port_answers(ip: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something listens at ip:port (another job's Ray, say)."""
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def pick_ipv4(words) -> str | None:
    """The first IPv4 address among words that is not loopback (some images map the hostname to 127.0.1.1)."""
    for word in words:
        parts = word.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts) and not word.startswith("127."):
            return word
    return None


def node_address() -> str | None:
    """This node's address for Ray: the first IPv4 of `hostname --ip-address` (multi-homed nodes list several),
    else of `hostname -I`, skipping loopback ones; None when there is none."""
    words = []
    for flag in ("--ip-address", "-I"):
        try:
            out = subprocess.run(["hostname", flag], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        words += out.split()
    return pick_ipv4(words)
