"""Connecting to Ray: a local instance by default, a running cluster when given an address.

The tutorial passed a Redis password on the command line. Ray 2.60 instead authenticates with a
token: the cluster and every driver read it from RAY_AUTH_TOKEN_PATH (a mode-600 file) or
RAY_AUTH_TOKEN, with RAY_AUTH_MODE=token. We never put the token in argv or in a log.
"""

import os
import stat
import sys
import tempfile
import threading
import time
from typing import Any

from rlhpc.algo.config import total_resources
from rlhpc.algo.quiet import forward_worker_output
from rlhpc.errors import UserError, warn
from rlhpc.run.address import check_reachable
from rlhpc.run.cli import without_token

# ray.init against a port that accepts but never answers can otherwise wait for minutes.
CONNECT_TIMEOUT_S = float(os.environ.get("RLHPC_CONNECT_TIMEOUT", "45"))


def prepare_auth(args) -> None:
    """Turns --redis-password and token variables into the environment Ray reads.

    Must run before `import ray`: Ray's core reads RAY_AUTH_MODE/RAY_AUTH_TOKEN once, at import.
    The flags are only read here; rlhpc.run.spec turns --redis-password into the address "auto".
    """
    if args.redis_password:
        warn("--redis-password puts the token in argv, where other users can read it (ps); "
             "prefer RAY_AUTH_TOKEN_PATH=<mode-600 file>")
        os.environ["RAY_AUTH_TOKEN"] = args.redis_password
        os.environ["RAY_AUTH_MODE"] = "token"
        # Out of argv at once: `ps` would show it for the whole run, and Ray records the driver's
        # command line in its job table (`ray list jobs`). Same command, token in the environment.
        argv = without_token(sys.orig_argv)
        in_argv = argv != sys.orig_argv  # not when main() was handed the flag in a list: nothing to hide
        if in_argv:
            if not args.address:
                argv += ["--address", "auto"]  # the tutorial's flag meant "join the running cluster"
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, argv)
    if not (args.address or args.redis_password):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise UserError(f"RAY_AUTH_TOKEN_PATH={path} is missing or empty")
        if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"the token file {path} is readable by other users: chmod 600 {path}")
    if "RAY_AUTH_MODE" not in os.environ and (path or os.environ.get("RAY_AUTH_TOKEN")):
        os.environ["RAY_AUTH_MODE"] = "token"


class _CapturedStderr:
    """Ray's C++ client reports auth failures on fd 2 only; keep them to explain the failure."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        return False


    def say(self, line: str) -> None:
        """Straight to the real stderr, past the capture."""
        os.write(self._saved, (line + "\n").encode())


def _init_with_deadline(say, **kwargs):
    import ray

    def give_up():
        # What a token cluster does to a driver without its token, and what any non-Ray port does.
        say(f"error: no answer from the Ray cluster at {kwargs.get('address')} within {CONNECT_TIMEOUT_S:g} s: "
            "if it uses token auth, export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<its token file>; "
            "else check that this is a Ray head's port")
        os._exit(2)

    timer = threading.Timer(CONNECT_TIMEOUT_S, give_up)
    timer.daemon = True
    timer.start()
    try:
        return ray.init(**kwargs)
    finally:
        timer.cancel()


def connect(spec) -> str:
    """Starts or joins Ray; returns a short description for the log."""
    import ray

    address = spec.placement.address
    common: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if address and "TF_USE_LEGACY_KERAS" in os.environ:
        # tf2: Keras 2 must be chosen before TF is imported, also in workers on other nodes. (A local
        # Ray's workers inherit our environment; a runtime env would cost fresh worker processes.)
        common["runtime_env"] = {"env_vars": {"TF_USE_LEGACY_KERAS": os.environ["TF_USE_LEGACY_KERAS"]}}
    if not address:
        # Local: the whole machine (or one core), no dashboard (not installed, and saves ~1 s).
        ray.init(num_cpus=1 if spec.placement.local_mode else None, include_dashboard=False, **common)
        forward_worker_output()
        return "local Ray" + (" on one core (--local-mode)" if spec.placement.local_mode else "")

    if address != "auto":
        check_reachable(address)
    started = time.time()
    with _CapturedStderr() as captured:
        try:
            _init_with_deadline(captured.say, address=address, **common)
            failure = None
        except ray.exceptions.AuthenticationError:
            raise UserError(f"the Ray cluster at {address} needs an auth token and none was found: set "
                            "RAY_AUTH_TOKEN_PATH to the cluster's token file") from None
        except (ConnectionError, RuntimeError) as e:
            failure = e
    if failure is None:
        forward_worker_output()
        return f"Ray cluster at {address} ({len(alive_nodes())} nodes, joined in {time.time() - started:.1f} s)"
    if "InvalidAuthToken" in captured.text or "Unauthenticated" in captured.text:
        raise UserError(f"the Ray cluster at {address} rejected our auth token: set RAY_AUTH_TOKEN_PATH "
                        "to the cluster's token file (and RAY_AUTH_MODE=token)")
    if address == "auto":
        raise UserError("no running Ray cluster found on this machine: give --address IP:PORT "
                        "(or export ip_head as the sbatch scripts do)")
    raise UserError(f"cannot connect to the Ray cluster at {address}: {failure}")


def alive_nodes() -> list:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_resources(bundles: list, spec) -> None:
    """Fails fast where Tune would otherwise wait forever for resources that do not exist."""
    import ray

    need = total_resources(bundles)
    have = ray.cluster_resources()
    where = "this machine" if not spec.placement.address else "the cluster"
    runners = spec.placement.num_env_runners
    gpus = need.get("GPU", 0)
    if gpus > have.get("GPU", 0):
        has = f"{have.get('GPU', 0):g} GPUs" if have.get("GPU") else "no GPU"
        raise UserError(f"--num-gpus {spec.placement.num_gpus:g} needs {gpus:g} GPU(s) for the learner(s), but {where} "
                        f"has {has}")
    cpus = need.get("CPU", 0)
    if cpus > have.get("CPU", 0):
        most = int(have.get("CPU", 0) - (cpus - runners))
        raise UserError(f"--num-cpus {runners} asks for {runners} env runners + {cpus - runners:g} "
                        f"CPU(s) for the driver/learner = {cpus:g} CPUs, but {where} has {have.get('CPU', 0):g} "
                        f"(use --num-cpus {max(most, 0)} or less)")
    for res, amount in need.items():
        if res not in ("CPU", "GPU", "memory") and amount > have.get(res, 0):
            raise UserError(f"no node of {where} offers the resource {res!r} (start those nodes with "
                            f"ray start --resources='{{\"{res}\": 1000}}')")
    nodes = alive_nodes()
    for bundle in bundles:  # each process must also fit on one node
        if not any(all(n["Resources"].get(r, 0) >= a for r, a in bundle.items()) for n in nodes):
            raise UserError(f"no single node of {where} can host a process needing {bundle}")


def check_cuda(spec) -> None:
    """Ray counts the GPUs a node declares; PyTorch must also find CUDA where the learner runs."""
    if spec.placement.num_gpus <= 0 or spec.placement.local_mode or spec.training.framework != "torch":
        return  # --local-mode trains on the CPU (spec.learner_placement)
    import ray

    resources = {spec.placement.learner_resource: 0.01} if spec.placement.learner_resource else None

    # ray.remote takes resources=None (its default), though its typed overload names only a dict.
    @ray.remote(num_cpus=0, num_gpus=min(spec.placement.num_gpus, 1), resources=resources)  # type: ignore[arg-type]
    def cuda_on_this_node():
        import torch

        return torch.cuda.is_available(), torch.version.cuda, ray.util.get_node_ip_address()

    try:
        available, version, node = ray.get(cuda_on_this_node.remote(), timeout=300)
    except ray.exceptions.GetTimeoutError:
        raise UserError("no GPU became free for a CUDA check within 300 s (are other jobs holding them?)") from None
    if not available:
        build = f"CUDA {version}" if version else "a CPU-only build"
        raise UserError(f"PyTorch on the learner's node {node} cannot use its GPU (torch is {build}): "
                        "install the CUDA build (env_example_gpu.yml)")
