"""The tracking flags (--wandb, --mlflow) checked and described before Ray starts; no tracking library is imported.

The callbacks that log are rlhpc.train.tracking's.
"""

import os

from rlhpc.errors import UserError

INSTALL = "pip install -e '.[tracking]' (or pip install wandb mlflow-skinny)"


def check(wandb_mode: str | None, mlflow_uri: str | None) -> tuple:
    """The tracking flags -> (wandb mode, MLflow tracking URI), checked before Ray starts."""
    if wandb_mode:
        _importable("wandb", "--wandb")
        if wandb_mode == "online" and not _wandb_key_known():
            raise UserError("--wandb online needs a W&B API key on this node: export WANDB_API_KEY or run "
                            "`wandb login`; on compute nodes without internet use --wandb offline and "
                            "`wandb sync` from a login node")
    if mlflow_uri:
        _importable("mlflow", "--mlflow")
        mlflow_uri = mlflow_tracking_uri(mlflow_uri)
    return wandb_mode, mlflow_uri


def mlflow_tracking_uri(text: str) -> str:
    """A folder (or file: URI) -> the file store's absolute file: URI; a server's or database's URI as given."""
    if "://" in text and not text.startswith("file:"):
        return text  # http(s)://, databricks://, sqlite:///...: MLflow's own
    path = os.path.abspath(os.path.expanduser(text.removeprefix("file://").removeprefix("file:")))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"--mlflow {text}: cannot create the MLflow file store there ({e.strerror})") from None
    return "file://" + path


def describe(spec) -> list:
    """What the first lines say about tracking (nothing when there is none)."""
    lines = []
    if spec.tracking.wandb == "offline":
        lines.append("tracking: W&B offline, each trial's run in <trial>/wandb/offline-run-*; upload it from a "
                     "login node with `wandb sync <trial>/wandb/offline-run-*`")
    elif spec.tracking.wandb == "online":
        lines.append(f"tracking: W&B online, project {wandb_project(spec)}")
    if spec.tracking.mlflow:
        store = spec.tracking.mlflow.removeprefix("file://")
        where = f"the file store {store} (mlflow ui --backend-store-uri {store})" \
            if spec.tracking.mlflow.startswith("file:") else spec.tracking.mlflow
        lines.append(f"tracking: MLflow experiment {spec.output.name} in {where}")
    return lines


def wandb_project(spec) -> str:
    return os.environ.get("WANDB_PROJECT") or spec.output.name


def _importable(module: str, flag: str) -> None:
    import importlib.util

    try:  # found, not imported: mlflow takes a second to import
        found = importlib.util.find_spec(module)
    except ValueError:  # in sys.modules as None: imports of it are blocked
        found = None
    if found is None:
        raise UserError(f"{flag} needs the {module} package, which this Python lacks: {INSTALL}")


def _wandb_key_known() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:  # where `wandb login` keeps it
        return netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai")
                                            .removeprefix("https://").removeprefix("http://")) is not None
    except (OSError, netrc.NetrcParseError):
        return False
