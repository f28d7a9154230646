"""`python -m rlhpc.doctor`: a preflight for a Slurm allocation, before Ray starts and the job trains.

Run in the batch shell of an allocation (sbatch or salloc): one short `srun` step per node (every het group)
runs the node checks (`--node`, printing JSON), and this side compares the nodes and prints one line per node
and one per problem, each with its fix:

    node n3: FAIL Ray's temp dir root /scratch/x is on nfs4: sockets do not work there; set RLHPC_RAY_TMP=/tmp

Exit 0 when nothing blocks training (WARN lines, slow but working, do not), 1 when something does. Outside an
allocation it checks this machine. The checks read the same settings as slurm/ray_cluster.sh (RLHPC_RAY_TMP,
RLHPC_RAY_PORT, RLHPC_OBJECT_STORE_MEMORY, RAY_AUTH_TOKEN_PATH) and --storage-path.
"""

import argparse
import json
import os
import platform
import resource
import socket
import stat
import subprocess
import sys
import time
from importlib import metadata

PACKAGES = ("ray", "torch", "gymnasium", "numpy", "rlhpc")  # the same on every node, or workers misbehave
SOCKET_PATH_LIMIT = 107  # bytes in a unix socket path (sun_path), the limit Ray's raylet and plasma sockets hit
NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "ceph", "glusterfs",
                        "fuse.sshfs", "fuse.glusterfs", "panfs", "wekafs"}
FEW_OPEN_FILES = 4096  # Ray keeps a socket and files per worker: below this, big nodes run out
LITTLE_DISK = 1 << 30  # bytes free under --storage-path


def problem(level: str, text: str) -> list:
    return [level, text]


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    return found


def mount_of(path: str) -> tuple:
    """(mount point, file system type) of the mount that holds path (its nearest existing ancestor)."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    best = ("/", "unknown")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    point = parts[1].replace("\\040", " ")
                    inside = path == point or path.startswith(point.rstrip("/") + "/")
                    if inside and len(point) >= len(best[0]):
                        best = (point, parts[2])
    except OSError:
        pass
    return best


def free_bytes(path: str) -> int:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def node_address() -> str | None:
    """The address slurm/ray_cluster.sh advertises for this node: the first IPv4 of `hostname --ip-address`
    (then `hostname -I`) that is not loopback."""
    for flag in ("--ip-address", "-I"):
        try:
            out = subprocess.run(["hostname", flag], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for word in out.split():
            parts = word.split(".")
            if len(parts) == 4 and all(p.isdigit() for p in parts) and not word.startswith("127."):
                return word
    return None


def ray_port() -> int:
    job = int(os.environ.get("SLURM_JOB_ID", "0") or 0)
    return int(os.environ.get("RLHPC_RAY_PORT") or 6379 + job % 1000)


def check_node(head: bool, storage_path: str, num_gpus: float | None = None) -> dict:
    """This node's facts and problems (run inside the node's srun step, or on this machine). num_gpus: what the
    trainer will ask for (None: not known)."""
    host = socket.gethostname().split(".")[0]
    problems, facts = [], {}

    # CPUs: what Slurm gave the step, what this process may run on.
    usable = len(os.sched_getaffinity(0))
    given = os.environ.get("SLURM_CPUS_ON_NODE")
    facts["cpus"] = usable
    if given and given.isdigit() and usable < int(given):
        problems.append(problem("WARN", f"Slurm gave this node {given} CPUs but this step may use {usable}: "
                                        "run the job's steps with --cpus-per-task (ray_cluster.sh does)"))

    # GPUs: those Slurm gave, those CUDA shows.
    gpus_given = os.environ.get("SLURM_GPUS_ON_NODE") or ""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    facts["gpus"] = 0
    if gpus_given.isdigit() and int(gpus_given) > 0:
        facts["gpus"] = int(gpus_given)
        try:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception as e:  # noqa: BLE001 -- any import or driver failure is the finding
            count, why = 0, f"{type(e).__name__}: {e}"
        else:
            why = f"CUDA_VISIBLE_DEVICES={visible!r}"
        if count == 0:
            unused = num_gpus == 0  # the trainer will not ask for one: slow nowhere, but say it
            problems.append(problem("WARN" if unused else "FAIL",
                                    f"Slurm gave this node {gpus_given} GPU(s) but torch finds none ({why}): load the "
                                    "CUDA module / install torch with CUDA in this environment" +
                                    (" (the trainer asks for no GPU: --num-gpus 0)" if unused else "")))

    # Ray's temp dir: node-local, and short enough for its unix sockets.
    root = os.environ.get("RLHPC_RAY_TMP", "/tmp")
    point, fs = mount_of(root)
    facts["temp"] = f"{root} on {fs}"
    if fs in NETWORK_FILE_SYSTEMS:
        problems.append(problem("FAIL", f"Ray's temp dir root {root} is on {fs} ({point}): unix sockets do not work "
                                        "there; set RLHPC_RAY_TMP to node-local storage (e.g. /tmp or $TMPDIR)"))
    # What Ray makes below it (ray_cluster.sh's layout, Ray's session dir name, its longest socket name).
    session = f"session_{time.strftime('%Y-%m-%d_%H-%M-%S')}_123456_{os.getpid()}"
    sample = os.path.join(root, f"ray-{os.environ.get('SLURM_JOB_ID', '0')}", host, session, "sockets",
                          "plasma_store")
    if len(sample.encode()) > SOCKET_PATH_LIMIT:
        problems.append(problem("FAIL", f"Ray's socket paths under RLHPC_RAY_TMP={root} would be "
                                        f"{len(sample.encode())} bytes, over the {SOCKET_PATH_LIMIT}-byte limit: set "
                                        "RLHPC_RAY_TMP to a shorter path (e.g. /tmp)"))

    # /dev/shm holds the object store; smaller, and Ray spills to disk (slowly).
    wanted = os.environ.get("RLHPC_OBJECT_STORE_MEMORY")
    try:
        shm = os.statvfs("/dev/shm")
        shm_bytes = shm.f_blocks * shm.f_frsize
    except OSError:
        shm_bytes = 0
    memory = int(os.environ.get("SLURM_MEM_PER_NODE", "0") or 0) << 20 or os.sysconf("SC_PAGE_SIZE") * \
        os.sysconf("SC_PHYS_PAGES")
    want = int(wanted) if wanted and wanted.isdigit() else int(0.3 * memory)  # Ray's default: 30 % of RAM
    facts["shm"] = shm_bytes
    if shm_bytes < want:
        problems.append(problem("FAIL", f"/dev/shm is {mib(shm_bytes)}, Ray's object store wants {mib(want)}: set "
                                        f"RLHPC_OBJECT_STORE_MEMORY={int(shm_bytes * 0.8)} (else Ray keeps it on "
                                        "disk, and every sample crosses the disk)"))

    # The address Ray will advertise; on the head, whether its port is free.
    address = node_address()
    facts["address"] = address
    if address is None:
        problems.append(problem("FAIL", "no IPv4 address other than loopback (hostname --ip-address, hostname -I): "
                                        "other nodes could not reach this one; fix the node's name resolution"))
    elif head:
        port = ray_port()
        try:
            socket.create_connection((address, port), timeout=2).close()
            taken = True
        except OSError:
            taken = False
        if taken:
            fixed = bool(os.environ.get("RLHPC_RAY_PORT"))
            problems.append(problem("FAIL" if fixed else "WARN",
                                    f"port {port} on {address} already answers (another job's Ray?): " +
                                    ("set RLHPC_RAY_PORT to a free port" if fixed else
                                     "ray_cluster.sh will move to the next free port")))

    # The token: in a mode-600 file every node reads, not in the environment.
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            mode = os.stat(path).st_mode
            with open(path):
                pass
        except OSError as e:
            problems.append(problem("FAIL", f"the token file {path} cannot be read here: {e.strerror}: put it on a "
                                            "file system every node of the job sees (RLHPC_JOB_DIR)"))
        else:
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                problems.append(problem("FAIL", f"the token file {path} has mode {stat.S_IMODE(mode):o}: other "
                                                f"users can read it; chmod 600 {path}"))
    if os.environ.get("RAY_AUTH_TOKEN"):
        problems.append(problem("WARN", "RAY_AUTH_TOKEN is set in the job's environment (readable in "
                                        "/proc/<pid>/environ of every process of the job): use "
                                        "RAY_AUTH_TOKEN_PATH=<mode-600 file>"))

    # Room for results and checkpoints; enough open files.
    storage = os.path.abspath(os.path.expanduser(storage_path))
    free = free_bytes(storage)
    if head and free < LITTLE_DISK:
        problems.append(problem("WARN", f"only {mib(free)} free under {storage}: checkpoints may not fit; "
                                        "choose another --storage-path"))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        problems.append(problem("WARN", f"open files limit is {soft}: Ray may run out on a big node; "
                                        "`ulimit -n 65536` in the job script"))
    return {"node": host, "versions": versions(), "facts": facts, "problems": problems}


def mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def compare(reports: list) -> None:
    """Versions that differ from the head's (the first report) become FAIL lines on the nodes that differ."""
    head = reports[0]
    for report in reports[1:]:
        for package, version in report.get("versions", {}).items():
            theirs = head.get("versions", {}).get(package)
            if theirs is not None and version != theirs:
                report["problems"].append(problem(
                    "FAIL", f"{package} {version} here, {theirs} on {head['node']} (the head): use one Python "
                            "environment on every node (e.g. RLHPC_VENV=/path/to/.venv)"))


def allocation_nodes() -> list:
    """[(node, het group or None)] of the allocation, head first; [] outside Slurm."""
    if not os.environ.get("SLURM_JOB_ID"):
        return []
    groups = int(os.environ.get("SLURM_HET_SIZE", "0") or 0)
    lists = [(os.environ.get(f"SLURM_JOB_NODELIST_HET_GROUP_{g}"), g) for g in range(groups)] if groups else \
        [(os.environ.get("SLURM_JOB_NODELIST"), None)]
    nodes = []
    for nodelist, group in lists:
        if not nodelist:
            continue
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30,
                             check=False).stdout
        nodes += [(node, group) for node in out.split()]
    return nodes


def run_on_nodes(nodes: list, storage_path: str, num_gpus) -> list:
    """One srun step per node, side by side, each printing its report."""
    steps = []
    for k, (node, group) in enumerate(nodes):
        cmd = ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w", node]
        if group is not None:
            cmd.append(f"--het-group={group}")
        cmd += [sys.executable, "-m", "rlhpc.doctor", "--node", "--storage-path", storage_path]
        if num_gpus is not None:
            cmd += ["--num-gpus", str(num_gpus)]
        if k == 0:
            cmd.append("--head")
        steps.append((node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    reports = []
    for node, step in steps:
        try:
            out, err = step.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            step.kill()
            out, err = step.communicate()
        try:
            reports.append(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            last = (err.strip().splitlines() or ["no output"])[-1]
            reports.append({"node": node, "versions": {}, "facts": {}, "problems": [problem(
                "FAIL", f"could not run `{sys.executable} -m rlhpc.doctor` there: {last}")]})
    return reports


def report_lines(reports: list) -> tuple:
    """-> (lines, failures)"""
    lines, failures = [], 0
    for report in reports:
        facts, v = report.get("facts", {}), report.get("versions", {})
        summary = (f"Python {v.get('python')}, ray {v.get('ray')}, torch {v.get('torch')}, gymnasium "
                   f"{v.get('gymnasium')}; {facts.get('cpus')} CPUs, {facts.get('gpus')} GPUs; "
                   f"address {facts.get('address')}; temp {facts.get('temp')}") if v else "no report"
        worst = "FAIL" if any(p[0] == "FAIL" for p in report["problems"]) else \
            "WARN" if report["problems"] else "ok"
        lines.append(f"node {report['node']}: {worst} ({summary})")
        for level, text in report["problems"]:
            lines.append(f"node {report['node']}: {level} {text}")
            failures += level == "FAIL"
    return lines, failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhpc.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage-path", default="~/ray_results", help="where the run will write its results")
    parser.add_argument("--num-gpus", type=float, help="GPUs the trainer will ask for (0: a GPU torch cannot use "
                                                       "is a warning, not a failure)")
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)  # one node's checks, as JSON
    parser.add_argument("--head", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node:
        print(json.dumps(check_node(args.head, args.storage_path, args.num_gpus)), flush=True)
        return 0
    started = time.monotonic()
    nodes = allocation_nodes()
    reports = run_on_nodes(nodes, args.storage_path, args.num_gpus) if nodes else \
        [check_node(True, args.storage_path, args.num_gpus)]
    compare(reports)
    lines, failures = report_lines(reports)
    warnings = sum(len(r["problems"]) for r in reports) - failures
    for line in lines:
        print(line, flush=True)
    print(f"doctor: {len(reports)} node(s), {failures} failure(s), {warnings} warning(s) "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
