"""The logger callbacks rlhpc.train.tracking adds, which import the tracking libraries: apart, so that
rlhpc.train.tracking imports none until a run tracks, and at module level, so that Tune can pickle them with its
experiment."""

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

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


class WandbTrialDirCallback(WandbLoggerCallback):
    """Tune's, with two changes. Each trial's W&B run goes into the trial's dir in the storage path (Tune's
    trial.path); Tune's own writes it into the trial's local_path, the session's temp dir, copied to storage only
    at checkpoints: a chain's jobs lost the rows logged since (measured: 3 of 6 in the first job). And a run
    stopped by a signal still ends its W&B runs."""

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
