"""Tracking (issue 17): a run trained in the trainer's process logs to an offline W&B run and an MLflow file store,
read back here with those libraries. A Tune run's trials (one tracked run each) are checked by test_search.py's
seeds test; the refusals before Ray by test_units.py."""

import json
import os

from conftest import RETURN, clean_env, read_progress, run_script, wandb_offline_runs

TRAINER = "simple_example/simple_trainer.py"


def test_an_in_process_run_is_in_wandb_offline_and_in_an_mlflow_file_store(tmp_path):
    store = tmp_path / "mlruns"
    out = run_script(TRAINER, "--name-env", "CartPole-v1", "--stop-iters", 3, "--storage-path", tmp_path / "results",
                     "--wandb", "offline", "--mlflow", store, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tracking: W&B offline, each trial's run in <trial>/wandb/offline-run-*; upload it from a login node " \
           "with `wandb sync <trial>/wandb/offline-run-*`" in out.stdout
    assert f"tracking: MLflow experiment CartPole-v1 in the file store {store} " in out.stdout
    assert "wandb:" not in out.stdout + out.stderr, "W&B's banner is not silenced"
    (trial,) = [p for p in (tmp_path / "results" / "CartPole-v1").iterdir() if p.is_dir()]
    progress = [row[RETURN] for row in read_progress(trial.parent)]
    params = json.loads((trial / "params.json").read_text())
    assert len(progress) == 3

    (wandb_run,) = wandb_offline_runs(trial)
    run = wandb_run["run"]
    assert (run.display_name, run.project, run.run_group) == (trial.name, "CartPole-v1", "CartPole-v1")
    assert [row[RETURN] for row in wandb_run["history"]] == progress
    assert [row["training_iteration"] for row in wandb_run["history"]] == [1, 2, 3]
    assert wandb_run["config"]["lr"] == params["lr"] and wandb_run["config"]["env"] == "CartPole-v1"

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file://{store}")
    experiment = client.get_experiment_by_name("CartPole-v1")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert (mlflow_run.info.run_name, mlflow_run.info.status) == (trial.name, "FINISHED")
    history = client.get_metric_history(mlflow_run.info.run_id, RETURN)
    assert [(m.step, m.value) for m in history] == list(zip([1, 2, 3], progress, strict=True))
    assert float(mlflow_run.data.params["lr"]) == params["lr"]
    assert not any(key.startswith("config/") for key in mlflow_run.data.metrics), "the config is params, not metrics"
