"""Experiment tracking: W&B and MLflow through Tune's own logger callbacks, also for a run trained in this process.

Compute nodes usually have no internet. `--wandb offline` writes each trial's W&B run into its trial dir
(<trial>/wandb/offline-run-*), to be uploaded later from a login node with `wandb sync`; `--mlflow PATH` logs
to an MLflow file store, a folder on the shared filesystem that `mlflow ui --backend-store-uri PATH` reads.
A Tune run gets the callbacks in its RunConfig; a run trained in this process (rlhpc.train.inprocess) drives the same
callbacks with a stand-in for Tune's trial, so both backends log the same names, config and metrics.

Why a stand-in (InProcessTrial): Tune's W&B and MLflow callbacks are written against its Trial, and they are the one
tracking path both backends share. A real ray.tune Trial needs Tune's StorageContext (its paths would point into a
Ray session's staging dir, not the trial dir) and names itself `<trainable>_<id>`, so the in-process run's W&B and
MLflow runs would change names; our own W&B/MLflow code would be a second path to keep equal to Tune's. The stand-in
has only what those callbacks read.
"""

import os

from rlhpc.errors import warn
from rlhpc.run.tracking_flags import wandb_project


def prepare(spec) -> None:
    """What the callbacks need in this process's environment; also for a resumed Tune run, whose callbacks
    Tune restores from the experiment instead of calling callbacks()."""
    if spec.tracking.wandb:
        os.environ["WANDB_MODE"] = spec.tracking.wandb  # Tune's callback wants an API key unless this says offline
    if spec.tracking.mlflow and spec.tracking.mlflow.startswith("file:"):
        # MLflow 3 refuses its file store unless asked for it; on an offline node it is the store that
        # needs no server and no database (SQLite on a shared filesystem is not safe across nodes).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def callbacks(spec) -> list:
    """Tune's logger callbacks for the run's tracking (empty without any). Call after ray.init."""
    prepare(spec)
    found: list = []
    if spec.tracking.wandb:
        import wandb

        from rlhpc.train.tracking_callbacks import WandbTrialDirCallback

        # The W&B settings go to wandb.init in the callback's logging actor (silent: W&B's banner per trial
        # would bury the progress lines). A run stopped by the wall-time signal has a minute or two left: its
        # W&B run waits at most 60 s for an upload (Tune's default is 30 min); what did not go up stays in the
        # trial dir for `wandb sync`. The W&B run's id is the trial's: resume="allow" lets a trial that
        # continues (--resume, the next job of a chain) log on into it; offline, each job writes its own
        # offline-run-* dir with that id.
        found.append(WandbTrialDirCallback(project=wandb_project(spec), group=spec.output.name,
                                           mode=spec.tracking.wandb,
                                           upload_timeout=60, settings=wandb.Settings(silent=True),
                                           reinit="finish_previous", resume="allow"))
    if spec.tracking.mlflow:
        from rlhpc.train.tracking_callbacks import MLflowMetricsCallback

        found.append(MLflowMetricsCallback(tracking_uri=spec.tracking.mlflow, experiment_name=spec.output.name))
    return found


class InProcessTrial:
    """What Tune's logger callbacks read from a Trial, for the one trial rlhpc.train.inprocess trains."""

    def __init__(self, trial_dir: str, trial_id: str, config: dict):
        self.local_path = self.path = trial_dir
        self.trial_id = trial_id
        self.config = config
        self.experiment_dir_name = os.path.basename(os.path.dirname(trial_dir))
        self.checkpoint = None

    def __str__(self):
        return os.path.basename(self.local_path)


class InProcessTracking:
    """Drives the run's logger callbacks as Tune's loop would: setup, trial start, each result, trial end."""

    def __init__(self, spec, trial: InProcessTrial):
        self.trial = trial
        self.callbacks = callbacks(spec)
        for callback in self.callbacks:
            callback.setup()
            callback.log_trial_start(trial)

    def result(self, result: dict) -> None:
        for callback in self.callbacks:
            callback.log_trial_result(result["training_iteration"], self.trial, result)

    def end(self, failed: bool) -> None:
        for callback in self.callbacks:
            try:
                callback.log_trial_end(self.trial, failed=failed)
                callback.on_experiment_end([self.trial])  # W&B: wait for the run's files to be written
            except Exception as e:  # noqa: BLE001 -- tracking must not lose the run's own results
                warn(f"{type(callback).__name__} did not finish: {e}")


