"""`python -m rlhpc.doctor`: a preflight for a Slurm allocation, before Ray starts and the job trains.

Run in the batch shell of an allocation (sbatch or salloc): one short `srun` step per node (every het group)
runs the node checks (`--node`, printing JSON), and this side compares the nodes and prints one line per node
and one per problem, each with its fix:

    node n3: FAIL Ray's temp dir root /scratch/x is on nfs4: sockets do not work there; set RLHPC_RAY_TMP=/tmp

A second round of steps checks the network the way Ray will use it: the head listens on its Ray port, at the
address it will advertise, and every other node connects to it. Exit 0 when nothing blocks training (WARN
lines, slow but working, do not), 1 when something does. Outside an allocation it checks this machine. The
checks read the same settings as slurm/ray_cluster.sh (RLHPC_RAY_TMP, RLHPC_RAY_PORT,
RLHPC_OBJECT_STORE_MEMORY, RAY_AUTH_TOKEN_PATH) and --storage-path.

With `--address HOST:PORT` it checks a running Ray cluster instead (token from RAY_AUTH_TOKEN_PATH or
RAY_AUTH_TOKEN): one task on every node reports what Ray sees there (CPUs, GPUs, object store) against what
the node has (the CPUs it may run on, Slurm's CPUs and GPUs, what torch finds) and its versions.
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

from rlhpc.errors import UserError
from rlhpc.run.address import check_reachable
from rlhpc.slurm import nodes
from rlhpc.slurm.findings import FAIL, WARN, Finding, NodeReport

PACKAGES = ("ray", "torch", "gymnasium", "numpy", "rlhpc")  # the same on every node, or workers misbehave
SOCKET_PATH_LIMIT = 107  # bytes in a unix socket path (sun_path), the limit Ray's raylet and plasma sockets hit
NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "ceph", "glusterfs",
                        "fuse.sshfs", "fuse.glusterfs", "panfs", "wekafs"}
REACH_SECONDS = 5  # a worker node retries the head's port this long (the head's listener may start later)
FEW_OPEN_FILES = 4096  # Ray keeps a socket and files per worker: below this, big nodes run out
LITTLE_DISK = 1 << 30  # bytes free under --storage-path
DEFAULT_STORAGE = "~/ray_results"  # the trainer's --storage-path default (rlhpc.run.cli)


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


def check_node(head: bool, storage_path: str, num_gpus: float | None = None, env_config=()) -> NodeReport:
    """This node's facts and problems (run inside the node's srun step, or on this machine). num_gpus: what the
    trainer will ask for (None: not known); env_config: its --env-config items. Each check adds what it found to
    facts, shown in the node's line."""
    host = socket.gethostname().split(".")[0]
    facts: dict = {}
    found = versions()
    problems = [*check_cpus(facts), *check_gpus(facts, num_gpus), *check_temp_dir(facts, host), *check_shm(facts),
                *check_address(facts, head), *check_token(), *check_room(head, storage_path),
                *check_numpy(found), *check_env_paths(env_config)]
    return NodeReport(node=host, versions=found, facts=facts, problems=problems)


def numpy_pins() -> list:
    """The installed packages that require NumPy below 2 here (e.g. CityLearn 2.3): ['citylearn (numpy<2.0)']."""
    from packaging.requirements import InvalidRequirement, Requirement

    pins = []
    for dist in metadata.distributions():
        for text in dist.requires or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            applies = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if requirement.name.lower() == "numpy" and applies and requirement.specifier and \
                    not any(requirement.specifier.contains(v) for v in ("2.0", "2.5", "2.99")):
                pins.append(f"{dist.metadata['Name']} (numpy{requirement.specifier})")
    return sorted(set(pins))


def check_numpy(found: dict) -> list:
    """Ray 2.60's pyarrow (Tune's results, RLlib's checkpoints) needs NumPy 2: with NumPy 1, `import ray.tune` fails
    on the node, which a run would only show as a worker's traceback. Names the package that pinned it."""
    major = found.get("numpy", "").split(".")[0]
    if not major.isdigit() or int(major) >= 2:
        return []
    pins = numpy_pins()
    return [Finding(FAIL, f"NumPy {found['numpy']} here: Ray {found.get('ray')}'s pyarrow needs NumPy 2 "
                          f"(`import ray.tune` fails)" + (f"; pinned below 2 by {', '.join(pins)}" if pins else "") +
                          ": install that package in its own environment, or one release of it that takes NumPy 2")]


def env_paths(items) -> list:
    """The trainer's --env-config items -> [(key, path)] for the values that name a file or folder (absolute, ~ or
    ./-relative): a simulator's data, which each node must read from a shared file system."""
    from rlhpc.run.cli import env_config_from

    return [(key, value) for key, value in env_config_from(items).items()
            if isinstance(value, str) and value.startswith(("/", "~", "./", "../"))]


def check_env_paths(items) -> list:
    """Each --env-config path exists on this node (a compute node does not see a laptop's or a login node's
    local disk, and may have no internet to fetch data at run time)."""
    found = []
    for key, path in env_paths(items):
        if not os.path.exists(os.path.expanduser(path)):
            found.append(Finding(FAIL, f"--env-config {key}={path}: no such file or folder on this node: put the "
                                       "simulator's data on a file system every node mounts (or copy it to each "
                                       "node before the job)"))
    return found


def check_cpus(facts: dict) -> list:
    """What Slurm gave the step against what this process may run on."""
    usable = len(os.sched_getaffinity(0))
    given = os.environ.get("SLURM_CPUS_ON_NODE")
    facts["cpus"] = usable
    if given and given.isdigit() and usable < int(given):
        return [Finding(WARN, f"Slurm gave this node {given} CPUs but this step may use {usable}: "
                              "run the job's steps with --cpus-per-task (ray_cluster.sh does)")]
    return []


def check_gpus(facts: dict, num_gpus: float | None) -> list:
    """The GPUs Slurm gave against those CUDA shows."""
    gpus_given = os.environ.get("SLURM_GPUS_ON_NODE") or ""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    facts["gpus"] = 0
    if not (gpus_given.isdigit() and int(gpus_given) > 0):
        return []
    facts["gpus"] = int(gpus_given)
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as e:  # noqa: BLE001 -- any import or driver failure is the finding
        count, why = 0, f"{type(e).__name__}: {e}"
    else:
        why = f"CUDA_VISIBLE_DEVICES={visible!r}"
    if count:
        return []
    unused = num_gpus == 0  # the trainer will not ask for one: slow nowhere, but say it
    return [Finding(WARN if unused else FAIL,
                    f"Slurm gave this node {gpus_given} GPU(s) but torch finds none ({why}): load the "
                    "CUDA module / install torch with CUDA in this environment" +
                    (" (the trainer asks for no GPU: --num-gpus 0)" if unused else ""))]


def check_temp_dir(facts: dict, host: str) -> list:
    """Ray's temp dir: node-local, and short enough for its unix sockets."""
    found = []
    root = os.environ.get("RLHPC_RAY_TMP", "/tmp")
    point, fs = mount_of(root)
    facts["temp"] = f"{root} on {fs}"
    if fs in NETWORK_FILE_SYSTEMS:
        found.append(Finding(FAIL, f"Ray's temp dir root {root} is on {fs} ({point}): unix sockets do not work "
                                   "there; set RLHPC_RAY_TMP to node-local storage (e.g. /tmp or $TMPDIR)"))
    # What Ray makes below it (ray_cluster.sh's layout, Ray's session dir name, its longest socket name).
    session = f"session_{time.strftime('%Y-%m-%d_%H-%M-%S')}_123456_{os.getpid()}"
    sample = os.path.join(root, f"ray-{os.environ.get('SLURM_JOB_ID', '0')}", host, session, "sockets",
                          "plasma_store")
    if len(sample.encode()) > SOCKET_PATH_LIMIT:
        found.append(Finding(FAIL, f"Ray's socket paths under RLHPC_RAY_TMP={root} would be "
                                   f"{len(sample.encode())} bytes, over the {SOCKET_PATH_LIMIT}-byte limit: set "
                                   "RLHPC_RAY_TMP to a shorter path (e.g. /tmp)"))
    return found


def check_shm(facts: dict) -> list:
    """/dev/shm holds the object store; smaller, and Ray spills to disk (slowly)."""
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
        return [Finding(FAIL, f"/dev/shm is {mib(shm_bytes)}, Ray's object store wants {mib(want)}: set "
                              f"RLHPC_OBJECT_STORE_MEMORY={int(shm_bytes * 0.8)} (else Ray keeps it on "
                              "disk, and every sample crosses the disk)")]
    return []


def check_address(facts: dict, head: bool) -> list:
    """The address Ray will advertise; on the head, whether its port is free."""
    address = nodes.node_address()  # the address slurm/ray_cluster.sh advertises for this node
    facts["address"] = address
    if address is None:
        return [Finding(FAIL, "no IPv4 address other than loopback (hostname --ip-address, hostname -I): "
                              "other nodes could not reach this one; fix the node's name resolution")]
    if not head:
        return []
    port = facts["port"] = nodes.port_setting(os.environ)
    taken = nodes.port_answers(address, port)
    facts["port_taken"] = taken  # the reach check below cannot listen there then
    if not taken:
        return []
    fixed = bool(os.environ.get("RLHPC_RAY_PORT"))
    return [Finding(FAIL if fixed else WARN,
                    f"port {port} on {address} already answers (another job's Ray?): " +
                    ("set RLHPC_RAY_PORT to a free port" if fixed else
                     "ray_cluster.sh will move to the next free port"))]


def check_token() -> list:
    """The token: in a mode-600 file every node reads, not in the environment, not on a command line."""
    found = []
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            mode = os.stat(path).st_mode
            with open(path):
                pass
        except OSError as e:
            found.append(Finding(FAIL, f"the token file {path} cannot be read here: {e.strerror}: put it on a "
                                       "file system every node of the job sees (RLHPC_JOB_DIR)"))
        else:
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                found.append(Finding(FAIL, f"the token file {path} has mode {stat.S_IMODE(mode):o}: other "
                                           f"users can read it; chmod 600 {path}"))
    if os.environ.get("RAY_AUTH_TOKEN"):
        found.append(Finding(WARN, "RAY_AUTH_TOKEN is set in the job's environment (readable in "
                                   "/proc/<pid>/environ of every process of the job): use "
                                   "RAY_AUTH_TOKEN_PATH=<mode-600 file>"))
    for pid, program in processes_showing(token_texts(path)):
        found.append(Finding(FAIL, f"the token is on the command line of process {pid} ({program}): every "
                                   "user of this node sees it with ps; pass it in a mode-600 file "
                                   "(RAY_AUTH_TOKEN_PATH), never as an argument"))
    return found


def check_room(head: bool, storage_path: str) -> list:
    """Room for results and checkpoints (on the head, which writes them); enough open files."""
    storage = os.path.abspath(os.path.expanduser(storage_path))
    found = check_storage(storage) if head else []
    free = free_bytes(storage)
    if head and free < LITTLE_DISK:
        found.append(Finding(WARN, f"only {mib(free)} free under {storage}: checkpoints may not fit; "
                                   "choose another --storage-path"))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        found.append(Finding(WARN, f"open files limit is {soft}: Ray may run out on a big node; "
                                   "`ulimit -n 65536` in the job script"))
    return found


def check_storage(storage: str) -> list:
    """--storage-path: a dir, or one the trainer can create (it makes the missing dirs, so a typo trains into a
    new tree: said when more than the last folder is missing)."""
    if os.path.isdir(storage):
        return []
    if os.path.exists(storage):
        return [Finding(FAIL, f"--storage-path {storage} is not a directory: choose another --storage-path")]
    parent = storage
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return [Finding(FAIL, f"--storage-path {storage} does not exist and cannot be created ({parent} is not a "
                              "writable directory): choose another --storage-path")]
    if storage == os.path.expanduser(DEFAULT_STORAGE) or parent == os.path.dirname(storage.rstrip("/")):
        return []  # the default, or a new folder in an existing one: what a first run makes, not a typo to catch
    return [Finding(WARN, f"--storage-path {storage} does not exist: the trainer will create it (below {parent}); "
                          "check the path for a typo")]


def token_texts(path: str | None) -> list:
    """The job's token(s), from its file and the environment, to look for where they must not be."""
    texts = [os.environ.get("RAY_AUTH_TOKEN", "").strip()]
    if path:
        try:
            with open(path) as f:
                texts.append(f.read().strip())
        except OSError:
            pass
    return [t for t in texts if len(t) >= 16]  # a short text would match by chance


def processes_showing(texts: list) -> list:
    """[(pid, program)] of this user's processes whose argv holds one of texts."""
    if not texts:
        return []
    found, me = [], os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != me:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if any(t.encode() in argv for t in texts):
            found.append((int(entry.name), os.path.basename(argv.split(b"\0")[0].decode(errors="replace"))))
    return found


def listen(address: str, port: int, expect: int) -> dict:
    """The head's side of the reach check: listen where Ray's head will, until `expect` nodes connected."""
    try:
        server = socket.create_server((address, port))
    except OSError as e:
        return {"error": f"cannot listen on {address}:{port}: {e.strerror}"}
    server.settimeout(0.2)
    came: set
    came, deadline = set(), time.monotonic() + REACH_SECONDS + 5
    with server:
        while len(came) < expect and time.monotonic() < deadline:
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            with conn:  # the node closes first: no TIME_WAIT left on the port Ray's head binds next
                conn.settimeout(1)
                try:
                    conn.recv(1)
                except OSError:
                    pass
            came.add(peer[0])
    return {"came": sorted(came)}


def reach(address: str, port: int) -> dict:
    """A worker node's side: connect to the head's port (retried: the head's listener may not be up yet)."""
    deadline, why = time.monotonic() + REACH_SECONDS, "no try"
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return {"reached": True}
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
            time.sleep(0.1)
    return {"reached": False, "error": why}


def mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def compare(reports: list) -> None:
    """Versions that differ from the head's (the first report) become FAIL lines on the nodes that differ."""
    head = reports[0]
    for report in reports[1:]:
        for package, version in report.versions.items():
            theirs = head.versions.get(package)
            if theirs is not None and version != theirs:
                report.problems.append(Finding(
                    FAIL, f"{package} {version} here, {theirs} on {head.node} (the head): use one Python "
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


def srun_doctor(steps: list) -> list:
    """[(node, het group, doctor args)] -> [(node, its JSON report or None, why not)]: one srun step per node,
    side by side."""
    running = []
    for node, group, args in steps:
        cmd = ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w", node]
        if group is not None:
            cmd.append(f"--het-group={group}")
        cmd += [sys.executable, "-m", "rlhpc.doctor", *args]
        running.append((node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results: list = []
    for node, step in running:
        try:
            out, err = step.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            step.kill()
            out, err = step.communicate()
        try:
            results.append((node, json.loads(out.strip().splitlines()[-1]), None))
        except (ValueError, IndexError):
            results.append((node, None, (err.strip().splitlines() or ["no output"])[-1]))
    return results


def run_on_nodes(nodes: list, storage_path: str, num_gpus, env_config=()) -> list:
    """Every node's checks, then whether every node reaches the head's port at the head's address."""
    common = ["--node", "--storage-path", storage_path] + (["--num-gpus", str(num_gpus)] if num_gpus is not None
                                                            else [])
    common += [f"--env-config={item}" for item in env_config]
    reports = []
    steps = [(node, group, common + ["--head"] * (k == 0)) for k, (node, group) in enumerate(nodes)]
    for node, report, why in srun_doctor(steps):
        reports.append(NodeReport.from_json(report) if report else NodeReport(node=node, problems=[Finding(
            FAIL, f"could not run `{sys.executable} -m rlhpc.doctor` there: {why}")]))
    head = reports[0]
    address, port = head.facts.get("address"), head.facts.get("port")
    if len(nodes) < 2 or not address or not port or head.facts.get("port_taken"):
        return reports
    target = f"{address}:{port}"
    steps = [(nodes[0][0], nodes[0][1], ["--listen", target, "--expect", str(len(nodes) - 1)])]
    steps += [(n, g, ["--reach", target]) for n, g in nodes[1:]]
    results = srun_doctor(steps)
    _, listened, why = results[0]
    if listened is None or "error" in listened:
        head.problems.append(Finding(FAIL, f"the head's address {target} does not work here: "
                                           f"{(listened or {}).get('error', why)}: fix the node's name "
                                           "resolution (hostname --ip-address)"))
        return reports
    for report, (_, reached, why) in zip(reports[1:], results[1:], strict=True):
        if not (reached or {}).get("reached"):
            report.problems.append(Finding(FAIL, f"cannot reach the head {head.node} at {target} "
                                                 f"({(reached or {}).get('error', why)}): this node's Ray could "
                                                 "not join; the nodes' firewall must let the job's ports through "
                                                 "(Ray's head port and 10002-19999)"))
    return reports


def report_lines(reports: list) -> tuple:
    """-> (lines, failures)"""
    lines, failures = [], 0
    for report in reports:
        facts, v = report.facts, report.versions
        where = facts.get("seen") or (f"{facts.get('cpus')} CPUs, {facts.get('gpus')} GPUs; address "
                                      f"{facts.get('address')}; temp {facts.get('temp')}")
        summary = (f"Python {v.get('python')}, ray {v.get('ray')}, torch {v.get('torch')}, gymnasium "
                   f"{v.get('gymnasium')}; {where}") if v else facts.get("seen", "no report")
        lines.append(f"node {report.node}: {report.worst} ({summary})")
        for problem in report.problems:
            lines.append(f"node {report.node}: {problem.level} {problem.text}")
            failures += problem.level == FAIL
    return lines, failures


def ray_node_facts() -> dict:
    """Run as a Ray task on one node: what the node has, to set beside what Ray counts there."""
    found = {"host": socket.gethostname().split(".")[0], "versions": versions(),
             "cpus": len(os.sched_getaffinity(0)), "slurm_cpus": os.environ.get("SLURM_CPUS_ON_NODE"),
             "slurm_gpus": os.environ.get("SLURM_GPUS_ON_NODE"), "cuda": None}
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        del os.environ["CUDA_VISIBLE_DEVICES"]  # Ray hides the GPUs from a task that asks for none
    try:
        import torch

        found["cuda"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as e:  # noqa: BLE001 -- any import or driver failure is the finding
        found["cuda_error"] = f"{type(e).__name__}: {e}"
    return found


def unreachable(address: str) -> int:
    """Before Ray: a closed port or a wrong host is one line and exit status 2 (ray.init retries for minutes,
    printing Ray's connection errors); 0 when something answers there."""
    try:
        if address != "auto":
            check_reachable(address)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def check_ray_cluster(address: str) -> int:
    """What a running Ray cluster sees on each node, against what each node has. -> the exit status."""
    import logging

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = time.monotonic()
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 -- connection, auth and address errors all end here
        text = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")
        print(f"error: cannot connect to the Ray cluster at {address}: {text} (the token comes from "
              "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)", file=sys.stderr)
        return 2
    nodes = sorted(ray.nodes(), key=lambda n: "node:__internal_head__" not in n.get("Resources", {}))
    probe = ray.remote(num_cpus=0)(ray_node_facts)
    pending = {n["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
               .remote() for n in nodes if n["Alive"]}
    ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=30)
    reports = []
    for n in nodes:
        resources = n.get("Resources", {})
        ray_cpus, ray_gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        seen = (f"Ray: {ray_cpus} CPUs, {ray_gpus} GPUs, object store "
                f"{mib(int(resources.get('object_store_memory', 0)))}")
        report = NodeReport(node=n["NodeManagerAddress"], facts={"seen": seen})
        reports.append(report)
        add = report.problems.append
        if not n["Alive"]:
            add(Finding(WARN, "Ray lists this node as dead (its raylet ended): training goes on without it"))
            continue
        if pending[n["NodeID"]] not in ready:
            add(Finding(FAIL, "a task sent there did not run within 30 s: its workers cannot start (see raylet.out "
                              "in the node's Ray session dir)"))
            continue
        try:
            found = ray.get(pending[n["NodeID"]])
        except Exception as e:  # noqa: BLE001 -- e.g. the project does not import in that node's environment
            text = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            add(Finding(FAIL, f"the check could not run there: {text}: use one Python environment on every node"))
            continue
        report.node = f"{found['host']} ({n['NodeManagerAddress']})"
        report.versions = found["versions"]
        if ray_cpus > found["cpus"]:
            add(Finding(WARN, f"Ray counts {ray_cpus} CPUs here but this node may run on {found['cpus']} (its CPU "
                                "affinity: Slurm's allocation): env runners would share cores; start Ray with "
                                f"--num-cpus={found['cpus']} (ray_cluster.sh does)"))
        slurm_cpus = int(found["slurm_cpus"]) if (found["slurm_cpus"] or "").isdigit() else 0
        if ray_cpus < slurm_cpus:
            add(Finding(WARN, f"Ray uses {ray_cpus} of the {slurm_cpus} CPUs Slurm gave this node: start Ray "
                                f"with --num-cpus={slurm_cpus}"))
        slurm_gpus = int(found["slurm_gpus"]) if (found["slurm_gpus"] or "").isdigit() else 0
        if slurm_gpus and not ray_gpus:
            add(Finding(WARN, f"Slurm gave this node {slurm_gpus} GPU(s) but Ray counts none: start Ray with "
                                f"--num-gpus={slurm_gpus}"))
        if ray_gpus and not found["cuda"]:
            add(Finding(FAIL, f"Ray counts {ray_gpus} GPU(s) here but torch finds none "
                                f"({found.get('cuda_error', 'torch.cuda.device_count() is 0')}): a learner placed "
                                "here fails; install torch with CUDA in this node's environment"))
    ray.shutdown()
    compare(reports)
    return print_report(reports, started)


def print_report(reports: list, started: float) -> int:
    """Prints the lines and the count line. -> the exit status (1 when something blocks training)."""
    lines, failures = report_lines(reports)
    warnings = sum(len(r.problems) for r in reports) - failures
    for line in lines:
        print(line, flush=True)
    print(f"doctor: {len(reports)} node(s), {failures} failure(s), {warnings} warning(s) "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhpc.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage-path", default=DEFAULT_STORAGE, help="where the run will write its results")
    parser.add_argument("--num-gpus", type=float, help="GPUs the trainer will ask for (0: a GPU torch cannot use "
                                                       "is a warning, not a failure)")
    parser.add_argument("--address", help="check this running Ray cluster (HOST:PORT) instead of the allocation")
    parser.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE",
                        help="the trainer's: a value that is a path (/..., ~/..., ./...) must exist on every node")
    # Run by the allocation's srun steps, each printing JSON: one node's checks; the head's port check.
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--head", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reach", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node:
        print(json.dumps(check_node(args.head, args.storage_path, args.num_gpus, args.env_config).to_json()),
              flush=True)
        return 0
    if args.listen or args.reach:
        address, _, port = (args.listen or args.reach).rpartition(":")
        found = listen(address, int(port), args.expect) if args.listen else reach(address, int(port))
        print(json.dumps(found), flush=True)
        return 0
    if args.address:
        return unreachable(args.address) or check_ray_cluster(args.address)
    started = time.monotonic()
    nodes = allocation_nodes()
    try:
        env_paths(args.env_config)  # a malformed item is one line here, not a failure on every node
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    reports = run_on_nodes(nodes, args.storage_path, args.num_gpus, args.env_config) if nodes else \
        [check_node(True, args.storage_path, args.num_gpus, args.env_config)]
    compare(reports)
    return print_report(reports, started)


if __name__ == "__main__":
    sys.exit(main())
