"""The Slurm job's decisions, called by slurm/ray_cluster.sh as `python -m rlhpc.slurm.job SUBCOMMAND`.

The shell does the node-level work (temp dirs, the token file, starting and ending Ray on the nodes, traps,
passing signals on); what the job decides is here, as pure functions with tests (tests/unit/test_slurm_job.py):

  ports [--probe IP --node NODE]  the head's GCS, client and agent ports; with --probe, skip ports another job holds
  node-ip                         this node's IPv4 address for Ray
  preflight                       the doctor on every node, with the trainer's --storage-path, --num-gpus, --env-config
  wait-nodes N --address IP:PORT --srun-pids "PID..." --timeout S --job-dir DIR   until N Ray nodes are alive
  time-left                       seconds the job has left, from squeue ("" when it does not say)
  trainer-argv                    the trainer's argv for this job of a chain (resuming the run the last one stopped)
  requeue [--usr1-left S]         exit 0 when the job is to requeue itself (the wall time stopped an unfinished run)

Argv that may hold a token (trainer-argv, preflight) comes NUL-separated on stdin, never on our own command line;
trainer-argv writes the argv back the same way. Log lines go to stderr with the prefix they always had
("ray_cluster.sh: "), which the job's log readers (and tests) look for. Bad settings: one line, exit 2.
"""

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import subprocess
import sys
import time

from rlhpc.errors import UserError
from rlhpc.run import job_status
from rlhpc.run.cli import redacted
from rlhpc.slurm import nodes

LOG_PREFIX = "ray_cluster.sh: "
PORT_TRIES = 20  # default ports tried on a head node where other jobs' Rays listen
DOCTOR_FLAGS = ("--storage-path", "--num-gpus", "--env-config")  # the trainer's flags the preflight needs
RESUME_FLAG = "--resume"


def log(*parts) -> None:
    print(LOG_PREFIX + " ".join(str(p) for p in parts), file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The job's RLHPC_* settings (slurm/ray_cluster.sh lists them) and which job of a chain of requeues this is."""

    status_file: str = ""  # RLHPC_STATUS_FILE: the trainer's status (rlhpc.run.job_status)
    requeue: str = "1"  # RLHPC_REQUEUE: "1" requeues at the wall time, anything else does not
    max_jobs: int = 10  # RLHPC_MAX_JOBS: most jobs in one chain
    walltime_left: int = 300  # RLHPC_WALLTIME_LEFT: a USR1 with at most this many seconds left is the wall time
    chain_job: int = 1  # 1 + SLURM_RESTART_COUNT

    @classmethod
    def from_env(cls, env) -> "Settings":
        return cls(status_file=env.get("RLHPC_STATUS_FILE", ""), requeue=env.get("RLHPC_REQUEUE") or "1",
                   max_jobs=whole_number(env, "RLHPC_MAX_JOBS", cls.max_jobs),
                   walltime_left=whole_number(env, "RLHPC_WALLTIME_LEFT", cls.walltime_left),
                   chain_job=whole_number(env, "SLURM_RESTART_COUNT", 0) + 1)


def whole_number(env, name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise UserError(f"{name}={text}: expected a whole number")
    return int(text)


# --- ports and addresses ------------------------------------------------------------------------------------

def choose_ports(env, answers, node: str = "") -> tuple:
    """The head's (GCS, client, agent) ports: the setting's, or while another job's Ray answers on one of them (a
    job 1000 ids away on the same node), the next default one. answers(port) -> bool: whether a port is taken.
    UserError when RLHPC_RAY_PORT was given and is taken, or PORT_TRIES ports are."""
    gcs = nodes.port_setting(env)
    ports = nodes.ray_ports(gcs)
    tries = 0
    while any(answers(port) for port in ports):
        taken = f"port {ports[0]} (or +{nodes.CLIENT_OFFSET}, +{nodes.AGENT_OFFSET}) on {node} is in use, by another " \
                "job's Ray?"
        tries += 1
        if env.get("RLHPC_RAY_PORT") or tries > PORT_TRIES:
            raise UserError(f"{taken} Set RLHPC_RAY_PORT to a free port")
        log(f"{taken} Trying the next one")
        ports = nodes.ray_ports(nodes.next_port(ports[0]))
    return ports


# --- time left ----------------------------------------------------------------------------------------------

def seconds_left(squeue_left: str) -> int | None:
    """squeue's %L ([D-][HH:]MM:SS) in seconds; None for anything else (UNLIMITED, NOT_SET, nothing)."""
    text = squeue_left.strip()
    if not re.fullmatch(r"([0-9]+-)?[0-9]+(:[0-9]+)*", text):
        return None
    days, _, clock = text.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return int(days or 0) * 86400 + seconds


def time_left(job_id: str) -> int | None:
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%L"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return seconds_left(out.splitlines()[0] if out.strip() else "")


# --- the trainer's command line -----------------------------------------------------------------------------

def without_resume(argv) -> list:
    """argv minus --resume and its optional value (--resume, --resume DIR, --resume=DIR)."""
    kept, after_flag = [], False
    for arg in argv:
        if after_flag:
            after_flag = False
            if not arg.startswith("-"):
                continue  # the value of that --resume
        if arg.startswith(RESUME_FLAG + "="):
            continue
        if arg == RESUME_FLAG:
            after_flag = True
            continue
        kept.append(arg)
    return kept


def resumes(settings: Settings, status: job_status.Status | None) -> bool:
    """Whether this job goes on with a run: it was requeued (not the first of its chain) and the previous job's
    trainer said which run it trained."""
    return settings.chain_job > 1 and status is not None and bool(status.experiment)


def trainer_argv(argv, settings: Settings, status: job_status.Status | None) -> tuple:
    """(argv for this job's trainer, log lines): in a requeued job (the next of a chain) the run the previous job
    stopped, whatever --resume the job was submitted with; else argv as given."""
    chain = f"job {settings.chain_job} of at most {settings.max_jobs} in this chain"
    if status is not None and resumes(settings, status):
        lines = [f"{chain}: resuming {status.experiment} after iteration {status.iteration} (the previous job "
                 f"stopped it: {status.ending})"]
        argv = [*without_resume(argv), RESUME_FLAG, status.experiment]
    elif settings.requeue == "1":
        lines = [f"{chain} (the job requeues itself at the wall time until the run is done; RLHPC_REQUEUE=0 turns "
                 "that off)"]
    else:
        lines = []
    return argv, [*lines, "running: " + " ".join(redacted(argv))]


# --- requeue or not -----------------------------------------------------------------------------------------

def decide_requeue(usr1: bool, usr1_left: int | None, settings: Settings, status: job_status.Status | None) -> tuple:
    """(requeue?, log lines) after the trainer exited: requeue only when the wall-time warning (a USR1 with at most
    RLHPC_WALLTIME_LEFT seconds left, or an unknown time left) stopped a run that is resumable (STOPPED), requeues
    are on, and the chain has jobs left. No USR1: the run ended by itself, or by a plain scancel (TERM)."""
    if not usr1:
        return False, []
    lines = []
    if usr1_left is None:
        lines.append("squeue did not say how much time the job had left at USR1: taking it for the wall time")
    ending = status.ending if status else ""
    if usr1_left is not None and usr1_left > settings.walltime_left:
        lines.append(f"USR1 came with {usr1_left}s left, more than RLHPC_WALLTIME_LEFT={settings.walltime_left}s: "
                     "a request to stop, not the wall time; not requeueing")
    elif settings.requeue != "1":
        lines.append(f"RLHPC_REQUEUE={settings.requeue}: not requeueing; resubmit with --resume to go on")
    elif status is None or ending != job_status.STOPPED:
        lines.append(f"not requeueing: the run ended {ending or 'without saying how'} (see above)")
    elif settings.chain_job >= settings.max_jobs:
        lines.append(f"not requeueing: this was job {settings.chain_job} of at most RLHPC_MAX_JOBS="
                     f"{settings.max_jobs}; resubmit with --resume {status.experiment} to go on")
    else:
        lines.append(f"requeueing: the wall time stopped the run after iteration {status.iteration}; "
                     f"job {settings.chain_job + 1} of at most {settings.max_jobs} resumes it")
        return True, lines
    return False, lines


# --- the preflight ------------------------------------------------------------------------------------------

def doctor_flags(argv) -> list:
    """The trainer's flags the preflight reads (where the run writes, the GPUs it asks for), in the forms given."""
    flags, wanted = [], None
    for arg in argv:
        if wanted:
            flags += [wanted, arg]
            wanted = None
        elif arg in DOCTOR_FLAGS:
            wanted = arg
        elif arg.split("=", 1)[0] in DOCTOR_FLAGS and "=" in arg:
            flags.append(arg)
    return flags


# --- waiting for the nodes ----------------------------------------------------------------------------------

def cluster_lines(alive: list) -> list:
    """What the cluster has, for the job's log: a total line, then one per node with its custom resources."""
    standard = {"CPU", "GPU", "memory", "object_store_memory"}
    total = (f"Ray cluster: {len(alive)} nodes, {sum(n['Resources'].get('CPU', 0) for n in alive):g} CPUs, "
             f"{sum(n['Resources'].get('GPU', 0) for n in alive):g} GPUs")
    lines = [total]
    for n in sorted(alive, key=lambda n: n["NodeManagerAddress"]):
        r = n["Resources"]
        custom = " ".join(f"{k}={v:g}" for k, v in sorted(r.items()) if k not in standard and not k.startswith("node:"))
        lines.append(f"  node {n['NodeManagerHostname']} {n['NodeManagerAddress']}: "
                     f"CPUs={r.get('CPU', 0):g} GPUs={r.get('GPU', 0):g} {custom}".rstrip())
    return lines


def wait_nodes(want: int, address: str, srun_pids: list, timeout: float, job_dir: str) -> int:
    """Polls until want Ray nodes are alive (Ray reads the token from RAY_AUTH_TOKEN_PATH); gives up early when a
    `ray start` step has exited."""
    import ray  # only here: the other subcommands run without Ray

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 -- whatever Ray raises, the job's log gets one line
        log(f"cannot connect to the Ray head at {address}: {type(e).__name__}: {e}")
        return 1
    deadline = time.monotonic() + timeout
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) >= want:
            break
        dead = [p for p in srun_pids if not os.path.exists(f"/proc/{p}")]
        if dead or time.monotonic() > deadline:
            why = f"{len(dead)} ray start step(s) exited" if dead else f"timeout after {timeout:.0f}s"
            log(f"only {len(alive)} of {want} Ray nodes joined ({why}); see the ray-*.log files in {job_dir}")
            return 1
        time.sleep(0.5)
    print("\n".join(cluster_lines(alive)), flush=True)
    return 0


# --- the command line ---------------------------------------------------------------------------------------

def read_argv(stream) -> list:
    """NUL-separated args (bash: printf '%s\\0' "$@"), so that a token in them is never on a command line."""
    data = stream.read()
    return data.split("\0")[:-1] if data else []


def write_argv(argv, stream) -> None:
    stream.write("".join(arg + "\0" for arg in argv))
    stream.flush()


def cmd_ports(args, env, settings) -> int:
    answers = (lambda port: nodes.port_answers(args.probe, port)) if args.probe else (lambda port: False)
    print(*choose_ports(env, answers, args.node))
    return 0


def cmd_node_ip(args, env, settings) -> int:
    address = nodes.node_address()
    if address is None:
        raise UserError(f"no IPv4 address other than loopback on {os.uname().nodename}")
    print(address)
    return 0


def cmd_preflight(args, env, settings) -> int:
    return preflight(read_argv(sys.stdin), env)


def cmd_wait_nodes(args, env, settings) -> int:
    return wait_nodes(args.want, args.address, args.srun_pids.split(), args.timeout, args.job_dir)


def cmd_time_left(args, env, settings) -> int:
    left = time_left(env.get("SLURM_JOB_ID", ""))
    print("" if left is None else left)
    return 0


def cmd_trainer_argv(args, env, settings) -> int:
    status = job_status.read(settings.status_file) if settings.chain_job > 1 and settings.status_file else None
    argv, lines = trainer_argv(read_argv(sys.stdin), settings, status)
    if settings.status_file and (resumes(settings, status) or settings.requeue == "1"):
        # Read: from here on only this job's trainer says how the run ended.
        with contextlib.suppress(FileNotFoundError):
            os.remove(settings.status_file)
    for line in lines:
        log(line)
    write_argv(argv, sys.stdout)
    return 0


def cmd_requeue(args, env, settings) -> int:
    usr1 = args.usr1_left is not None
    left = args.usr1_left.strip() if usr1 else ""
    status = job_status.read(settings.status_file) if settings.status_file else None
    requeue, lines = decide_requeue(usr1, int(left) if left.isdigit() else None, settings, status)
    for line in lines:
        log(line)
    return 0 if requeue else 1


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m rlhpc.slurm.job", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ports = sub.add_parser("ports", help="the head's GCS, client and agent ports")
    ports.add_argument("--probe", metavar="IP", help="skip ports where something answers at IP (another job's Ray)")
    ports.add_argument("--node", default="", help="the head node's name, for the log")
    ports.set_defaults(run=cmd_ports)
    sub.add_parser("node-ip", help="this node's IPv4 address for Ray").set_defaults(run=cmd_node_ip)
    sub.add_parser("preflight", help="the doctor on every node (the trainer's argv on stdin)").set_defaults(
        run=cmd_preflight)
    wait = sub.add_parser("wait-nodes", help="wait until N Ray nodes are alive, then print what the cluster has")
    wait.add_argument("want", type=int)
    wait.add_argument("--address", required=True)
    wait.add_argument("--srun-pids", default="")
    wait.add_argument("--timeout", type=float, default=300)
    wait.add_argument("--job-dir", default="")
    wait.set_defaults(run=cmd_wait_nodes)
    sub.add_parser("time-left", help="seconds the job has left").set_defaults(run=cmd_time_left)
    sub.add_parser("trainer-argv", help="the trainer's argv for this job of a chain (argv on stdin and stdout)") \
        .set_defaults(run=cmd_trainer_argv)
    requeue = sub.add_parser("requeue", help="exit 0 when the job is to requeue itself")
    requeue.add_argument("--usr1-left", help="given when USR1 came: the seconds the job had left then ('' unknown)")
    requeue.set_defaults(run=cmd_requeue)
    return parser.parse_args(argv)


def preflight(argv, env) -> int:
    """`python -m rlhpc.doctor` with the trainer's flags it needs; RLHPC_DOCTOR=0 skips it."""
    if (env.get("RLHPC_DOCTOR") or "1") != "1":
        log(f"RLHPC_DOCTOR={env['RLHPC_DOCTOR']}: no preflight")
        return 0
    from rlhpc.slurm import doctor

    if doctor.main(doctor_flags(argv)) != 0:
        log("the preflight found what would break Ray (lines above); RLHPC_DOCTOR=0 skips it")
        return 1
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    try:
        return args.run(args, os.environ, Settings.from_env(os.environ))
    except (UserError, nodes.PortError) as e:
        print(f"{LOG_PREFIX}{e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
