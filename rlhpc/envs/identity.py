"""Who one env copy is: its runner, its index within the runner, a run-wide number and a private scratch folder on
its node (`assign`), plus what a copy that starts a simulator process needs: a loopback port (`free_port`) and
processes that die with their parent (`die_with_parent`, `with_parent_death`).

RLlib 2.60 hands every copy of a vector env the same EnvContext (worker_index = the env runner, vector_index = 0,
measured with 8 copies), so a simulator that needs a port or a folder per copy cannot tell the copies apart from
it. `assign` is called in the process that builds one copy (the driver, an env runner, or one of Gymnasium's
async sub-env processes) and finds the copy's index within its runner by claiming the lowest free numbered slot
(a file made with O_CREAT|O_EXCL) in a folder of that runner process on this node; a slot whose owner process is
dead is taken back, so a copy rebuilt after a crash gets its index (and folder) again. The identity goes on the
EnvContext as attributes, never as keys: RLlib calls `gymnasium.make(id, **env_config)` for Gymnasium ids, where an
extra key would be an unknown keyword argument.

Layout on each node (every folder mode 700, owned by the user):

    <root>/                      $RLHPC_SCRATCH_ROOT, or <tempfile.gettempdir()>/rlhpc-<uid> ($TMPDIR: under Slurm
                                 often the job's own temp dir, removed with the job)
      <run>/                     $RLHPC_RUN_ID, or job-<SLURM_JOB_ID>, or local
        runner-<w>-<pid>-<start>/  one per env runner process (w: its worker_index; pid and start time: that
                                 process, so Tune trials and restarted runners never share one)
          slot-<i>               the claim of copy i: "<pid> <start time> <n>" (the process holding it, and
                                 which of its claims: one process holds several when sub-envs are not async)
          copy-<i>/              copy i's scratch_dir

A runner folder is removed when its process exits normally (atexit, where that process built a copy itself, as
Gymnasium's async vector env does to read the spaces), and by `cleanup` or the next new runner's `assign` on the
node once its process is dead (a killed runner's folder; a dead node's leftovers are the job's temp dir's).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["assign", "cleanup", "copy_id_of", "die_with_parent", "free_port", "release", "run_dir",
           "with_parent_death"]

ROOT_VAR = "RLHPC_SCRATCH_ROOT"  # the folder holding every run's folders on a node (default: see run_dir)
RUN_VAR = "RLHPC_RUN_ID"  # the run's name under it (default: the Slurm job, or "local")
RUNNER_VAR = "RLHPC_RUNNER_PID"  # the runner process's PID, for copies started as plain subprocesses of it
STRIDE = 1000  # copy_id = worker_index * STRIDE + vector_index when the number of copies per runner is not given
OVERFLOW = 10**6  # copy ids of copies past num_envs (a copy not released): above every regular one
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class IdentityContext(dict):
    """The env_config with the identity attributes, when the caller passed a plain dict (RLlib passes an
    EnvContext, which is copied as it is)."""

    worker_index: int
    vector_index: int
    copy_id: int
    scratch_dir: str


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from the state on (field 3), or None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (with the PID, unique on a node), "" where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def _alive(pid: int, start: str = "") -> bool:
    """Is that process (that PID started at `start`, when given) still running? Zombies count as dead."""
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[0] != "Z" and (not start or len(fields) <= 19 or fields[19] == start)
    if os.path.isdir("/proc"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Makes the kernel SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG; elsewhere a
    no-op returning False). With `parent_pid`, a process whose parent is already gone (it died before the call)
    kills itself at once. The signal comes when the parent *thread* that started this process exits: start
    such processes from a thread that lives as long as they should."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


_TRAMPOLINE = ("import ctypes,os,sys\n"
               "ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"
               "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
               "os.execvp(sys.argv[2], sys.argv[2:])\n")


def with_parent_death(argv: list[str]) -> list[str]:
    """`argv` (any program: EnergyPlus, SUMO, a Python server) as a command that dies with the process that starts
    it: on Linux a few lines of Python set PR_SET_PDEATHSIG and exec the program (the setting survives exec), so a
    simulator never outlives its env's process, even one killed with SIGKILL. Pass it to subprocess.Popen from the
    process (and thread) that owns the env. Elsewhere `argv` unchanged."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]


def _runner_pid() -> int:
    """The process that holds this copy's vector env: the parent of a multiprocessing child (Gymnasium's async
    sub-envs), $RLHPC_RUNNER_PID where a runner set it for the processes it starts, else this process."""
    if os.environ.get(RUNNER_VAR, "").isdigit():
        return int(os.environ[RUNNER_VAR])
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getpid()


# ---------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------


def _private_dir(path: Path) -> Path:
    """`path` as a folder of this user's alone (mode 700); refuses one that is a link or someone else's."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not path.is_dir() or path.is_symlink() or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise PermissionError(f"{path} is not a folder of this user's (a link, or owned by someone else): "
                              f"set {ROOT_VAR} to a folder of your own")
    if info.st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


def run_dir() -> Path:
    """This run's folder on this node: <root>/<run> (see the module docstring), created, mode 700."""
    root = os.environ.get(ROOT_VAR)
    if root:
        base = _private_dir(Path(root).expanduser())
    else:
        user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
        base = _private_dir(Path(tempfile.gettempdir()) / f"rlhpc-{user}")
    job = os.environ.get("SLURM_JOB_ID")
    run = os.environ.get(RUN_VAR) or (f"job-{job}" if job else "local")
    return _private_dir(base / run.replace(os.sep, "_"))


def _runner_owner(folder: Path) -> tuple[int, str] | None:
    """(pid, start time) of the process a runner-<w>-<pid>-<start> folder belongs to."""
    parts = folder.name.split("-")
    if len(parts) != 4 or parts[0] != "runner" or not parts[2].isdigit():
        return None
    return int(parts[2]), parts[3]


def cleanup(run: Path | None = None) -> list[Path]:
    """Removes the runner folders (scratch folders included) of `run` (default: this run's, run_dir()) on this
    node whose runner process is dead, and the run's folder once empty. Safe to call at any time, by any process
    of the run: a live runner's folder is never touched. -> the folders removed."""
    run = run or run_dir()
    removed = _sweep(run)
    with contextlib.suppress(OSError):
        run.rmdir()  # only when empty
    return removed


def _sweep(run: Path) -> list[Path]:
    """Removes the folders of `run`'s dead runners; -> those removed."""
    removed = []
    for folder in sorted(run.glob("runner-*")):
        owner = _runner_owner(folder)
        if owner is not None and not _alive(*owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _remove_at_exit(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the handler
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # the run's folder, once empty


_registered: set[Path] = set()


def _runner_dir(worker_index: int, runner_pid: int) -> Path:
    """The runner process's folder; the first time this process makes one, dead runners' folders go."""
    run = run_dir()
    folder = run / f"runner-{worker_index}-{runner_pid}-{_start_time(runner_pid) or 0}"
    if not folder.exists():
        _sweep(run)
    for _ in range(5):
        try:
            _private_dir(folder)
            break
        except FileNotFoundError:  # a runner that ended meanwhile removed the (empty) run folder
            _private_dir(run)
    if runner_pid == os.getpid() and folder not in _registered:
        import atexit

        atexit.register(_remove_at_exit, folder, runner_pid)
        _registered.add(folder)
    return folder


# ---------------------------------------------------------------------------
# Slots
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process at a time claims slots in `folder` (a read-then-take-back of a dead owner's slot must not race)."""
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # not on Linux/macOS: O_EXCL alone
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _me() -> str:
    """This process, as slot files name their owner: "<pid> <start time>"."""
    return f"{os.getpid()} {_start_time(os.getpid())}"


_claims = itertools.count()


def _new_claim() -> str:
    """A claim of this process: its "<pid> <start time>" and a number of its own (one process holds several
    copies' slots when sub-envs step in the runner's own process)."""
    return f"{_me()} {next(_claims)}"


def _mine(owner: str) -> bool:
    return owner.rpartition(" ")[0] == _me()


def _take(slot: Path, owner: str) -> bool:
    """Creates the slot file with `owner` in it; False when it exists."""
    try:
        fd = os.open(slot, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(owner + "\n")
    return True


def _holder(slot: Path) -> str:
    try:
        return slot.read_text().strip()
    except FileNotFoundError:
        return ""


def _holder_alive(slot: Path) -> bool:
    pid, start = (_holder(slot).split() + ["", ""])[:2]
    return pid.isdigit() and _alive(int(pid), start)


def _take_back(slot: Path, owner: str) -> bool:
    """Takes `slot` for `owner` if it is free, held by a dead process, or held by `owner` already."""
    if _take(slot, owner) or _holder(slot) == owner:
        return True
    if _holder_alive(slot):
        return False
    slot.unlink(missing_ok=True)
    return _take(slot, owner)


def _claim(runner: Path, owner: str, wanted: int | None = None) -> int:
    """-> the index of the slot claimed for `owner` in `runner`: `wanted` when it is free (or `owner`'s already: a
    rebuild with the same context), else the lowest free one; a dead process's slot is free."""
    with _locked(runner):
        if wanted is not None and _take_back(runner / f"slot-{wanted}", owner):
            return wanted
        index = 0
        while not _take_back(runner / f"slot-{index}", owner):
            index += 1
        return index


def copy_id_of(worker_index: int, vector_index: int, num_envs: int | None = None) -> int:
    """The run-wide number of copy `vector_index` of runner `worker_index`: worker_index * num_envs +
    vector_index (worker_index * 1000 + vector_index when num_envs is not known)."""
    if not num_envs:
        return worker_index * STRIDE + vector_index
    if vector_index < num_envs:
        return worker_index * num_envs + vector_index
    warnings.warn(f"env runner {worker_index} holds more than its {num_envs} env copies (one was built without "
                  "closing the one it replaces); the extra copy gets a copy_id above the run's range", stacklevel=3)
    return OVERFLOW + worker_index * STRIDE + vector_index


# ---------------------------------------------------------------------------
# The identity
# ---------------------------------------------------------------------------


def _assigned(env_config: Any) -> bool:
    return getattr(env_config, "copy_id", None) is not None and bool(getattr(env_config, "scratch_dir", None))


def _set(context: Any, worker: int, runner: Path, owner: str, index: int, num_envs: int | None) -> Any:
    context.worker_index = worker
    context.vector_index = index
    context.copy_id = copy_id_of(worker, index, num_envs)
    context.scratch_dir = str(_private_dir(runner / f"copy-{index}"))
    context._rlhpc_claim = owner  # what release gives back
    if _runner_pid() == os.getpid():  # (a sub-env process's slots go with the process)
        weakref.finalize(context, _give_back, runner / f"slot-{index}", owner)  # a copy dropped without release
    return context


def assign(env_config: Any, num_envs: int | None = None) -> Any:
    """Gives the env copy built in this process its identity; call it with the EnvContext RLlib passes to the
    creator, and build the env with what it returns: a copy of `env_config` (the copies of one vector env share
    RLlib's object) with these attributes:

        worker_index  the env runner (0: the driver's own), as RLlib set it
        vector_index  the copy's index within its runner, 0 .. num_envs - 1 (RLlib's is 0 for every copy)
        copy_id       unique in the run: worker_index * num_envs + vector_index (num_envs: copies per runner;
                      without it worker_index * 1000 + vector_index)
        scratch_dir   a folder of this copy's alone on this node (mode 700), kept while the runner lives: a copy
                      rebuilt after a crash gets the same index, number and folder

    A plain dict comes back as an IdentityContext (a dict with the same attributes). A context that has its
    identity already (a rebuild with the same context) keeps it, unless another live copy took its index
    meanwhile. In a multiprocessing child (Gymnasium's async sub-envs) this process is also set to die with its
    parent (`die_with_parent`), and the slot is free again when the process ends. In the runner's own process
    (sync sub-envs, the driver) keep the returned context while the copy lives, and call `release` when the copy
    is closed for good, so that a copy built later in the same process reuses the index; the context being
    garbage-collected releases it too (Gymnasium's async vector env builds one copy in the runner's process to
    read the spaces, and drops it)."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid:
        die_with_parent(parent.pid)
    if _assigned(env_config):
        runner = _private_dir(Path(env_config.scratch_dir).parent)
        owner = getattr(env_config, "_rlhpc_claim", "")
        owner = owner if _mine(owner) else _new_claim()
        index = _claim(runner, owner, wanted=env_config.vector_index)
        if index == env_config.vector_index and owner == getattr(env_config, "_rlhpc_claim", ""):
            _private_dir(Path(env_config.scratch_dir))
            return env_config
        return _set(env_config, env_config.worker_index, runner, owner, index, num_envs)
    worker = int(getattr(env_config, "worker_index", 0) or 0)
    runner = _runner_dir(worker, _runner_pid())
    owner = _new_claim()
    index = _claim(runner, owner)
    context = copy.copy(env_config) if hasattr(env_config, "__dict__") else IdentityContext(env_config or {})
    return _set(context, worker, runner, owner, index, num_envs)


def release(env_config: Any) -> None:
    """Gives back the copy's slot (when this process holds it), so that the next copy built in this process takes
    its index; its scratch folder stays (a rebuilt copy finds its files) until the runner's folder goes. Safe to
    call more than once, and on a context without identity."""
    if _assigned(env_config):
        slot = Path(env_config.scratch_dir).parent / f"slot-{env_config.vector_index}"
        _give_back(slot, getattr(env_config, "_rlhpc_claim", ""))


def _give_back(slot: Path, owner: str) -> None:
    """Removes the slot if `owner`, a claim of this process (not of the parent of a forked child that inherited
    the context), holds it."""
    if owner and _mine(owner) and _holder(slot) == owner:
        slot.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port free on this node's loopback (127.0.0.1) now. Bind the simulator to 127.0.0.1:port, never to
    0.0.0.0: other machines then cannot reach it. Other users of a shared node can still connect to a loopback
    port, so let the simulator accept only a client that proves itself (a token from the copy's scratch_dir, as
    custom_gym_env/external_sim_env.py does), or use a Unix socket in scratch_dir. The port is free when this
    returns, not reserved: a simulator that finds it taken should be started again with a new one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
