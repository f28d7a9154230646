"""The logger callbacks rlhpc.tracking adds that import a tracking library: apart, so that rlhpc.tracking (read
before Ray starts) imports none, and at module level, so that Tune can pickle them with its experiment."""

from ray.air.integrations.mlflow import MLflowLoggerCallback


class MLflowMetricsCallback(MLflowLoggerCallback):
    """Tune's, without the config among the metrics (Tune puts it in every result): it is the run's params."""

    def log_trial_result(self, iteration, trial, result):
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})
