"""The logger callbacks rlhpc.train.tracking adds, which import the tracking libraries: apart, so that
rlhpc.train.tracking imports none until a run tracks, and at module level, so that Tune can pickle them with its
experiment."""

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

TRIAL_DIR_TAG = "rlhpc.trial_dir"


class MLflowMetricsCallback(MLflowLoggerCallback):
    """Tune's, with two changes. The config is logged once, as the run's params, not also as metrics in every
    result (Tune puts it in each). A trial that continues (`--resume`, the next job of a Slurm chain) logs on
    into its MLflow run, found by the trial's dir in the storage path (Tune's trial.path; its local_path is in
    the session's temp dir, another for each job), instead of starting a second run of the same name."""

    def log_trial_start(self, trial):
        if trial in self._trial_runs:  # Tune restarted a failed trial: its run goes on
            return super().log_trial_start(trial)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        assert self.mlflow_util.experiment_id is not None  # set by setup(), before the first trial starts
        runs = client.search_runs([self.mlflow_util.experiment_id], max_results=5000)
        earlier = [run.info.run_id for run in runs if run.data.tags.get(TRIAL_DIR_TAG) == trial.path]
        if earlier:
            client.update_run(earlier[0], status="RUNNING")
            self._trial_runs[trial] = earlier[0]
            return None  # its params stay the ones it started with (MLflow refuses to change a param)
        super().log_trial_start(trial)
        client.set_tag(self._trial_runs[trial], TRIAL_DIR_TAG, trial.path)
        return None

    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})


class _EachRowCommitted:
    """The wandb module as Tune's logging actor uses it, with each row committed when it is logged and the
    run's file complete when the actor's run ends. CI's Slurm chain once lost its first job's last row (iteration
    6, kept by progress.csv and MLflow): W&B holds a row logged with a step back until a higher step or the
    run's finish (measured: the last of 3 rows stayed out of the file until finish), and the finish raced Ray's
    kill of the actor's processes (below)."""

    def __init__(self, wandb_module):
        self._wandb = wandb_module

    def log(self, data, step=None):
        self._wandb.log(data, step=step, commit=True)

    def finish(self):
        # W&B's service process writes the run's file: finish returned while it still wrote (its log: 6 ms
        # later), and Ray kills an actor's child processes with the actor, right after this. Teardown waits
        # for the service to exit.
        self._wandb.finish()
        self._wandb.teardown()

    def __getattr__(self, name):  # init, config, Artifact, log_artifact: W&B's own
        return getattr(self._wandb, name)


class _RowCommittingLoggingActor(_WandbLoggingActor):
    """Tune's logging actor (one per trial, reading the trial's results from a queue), logging through
    _EachRowCommitted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wandb = _EachRowCommitted(self._wandb)  # type: ignore[assignment]  # used as the module is


class WandbTrialDirCallback(WandbLoggerCallback):
    """Tune's, with three changes. Each trial's W&B run goes into the trial's dir in the storage path (Tune's
    trial.path); Tune's own writes it into the trial's local_path, the session's temp dir, copied to storage only
    at checkpoints: a chain's jobs lost the rows logged since (measured: 3 of 6 in the first job). A run stopped
    by a signal still ends its W&B runs. And each row goes to W&B when it is logged (not held back for the next),
    and all are in the run's file when the logging actor ends (_EachRowCommitted)."""

    _logger_actor_cls = _RowCommittingLoggingActor

    def log_trial_start(self, trial):
        self.kwargs = {**self.kwargs, "dir": trial.path}  # wandb.init(dir=...): <dir>/wandb/offline-run-*
        super().log_trial_start(trial)

    def on_experiment_end(self, trials, **info):
        # A run stopped by a signal (the wall time) gets no log_trial_end: without the end marker its logging
        # actors waited out the whole upload timeout (60 s of the job's last 2 minutes, measured) and were then
        # killed with the last result unwritten.
        for trial in list(self._trial_queues):
            self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)
