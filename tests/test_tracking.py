"""Tracking (issue 17): a run trained in the trainer's process logs to an offline W&B run and an MLflow file store,
read back here with those libraries, and a --resume (what the next job of a Slurm chain runs) logs on into the
same runs. A Tune run's trials (one tracked run each) are checked by test_search.py's seeds test; the refusals
before Ray by unit/test_flags.py."""

import json
import os
from pathlib import Path

from conftest import RETURN, clean_env, read_progress, run_script, wandb_offline_runs

TRAINER = "simple_example/simple_trainer.py"


def test_a_run_and_its_resume_are_one_wandb_run_and_one_mlflow_run(tmp_path):
    store, results = tmp_path / "mlruns", tmp_path / "results"
    first = run_script(TRAINER, "--name-env", "CartPole-v1", "--stop-iters", 3, "--storage-path", results,
                       "--wandb", "offline", "--mlflow", store, env=clean_env(HOME=tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "tracking: W&B offline, each trial's run in <trial>/wandb/offline-run-*; upload it from a login node " \
           "with `wandb sync <trial>/wandb/offline-run-*`" in first.stdout
    assert f"tracking: MLflow experiment CartPole-v1 in the file store {store} " in first.stdout
    assert "wandb:" not in first.stdout + first.stderr, "W&B's banner is not silenced"
    # The tracking flags come back from the run's record, as its other flags do.
    resumed = run_script(TRAINER, "--resume", "--name-env", "CartPole-v1", "--storage-path", results,
                         "--stop-iters", 5, env=clean_env(HOME=tmp_path))  # train longer: no --allow-changes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (trial,) = [p for p in (results / "CartPole-v1").iterdir() if p.is_dir()]
    progress = [row[RETURN] for row in read_progress(trial.parent)]
    params = json.loads((trial / "params.json").read_text())
    assert len(progress) == 5

    wandb_runs = wandb_offline_runs(trial)  # offline, each job writes its own dir, with the trial's run id
    assert len(wandb_runs) == 2 and len({r["run"].run_id for r in wandb_runs}) == 1
    for run in wandb_runs:
        assert (run["run"].display_name, run["run"].project, run["run"].run_group) == \
               (trial.name, "CartPole-v1", "CartPole-v1")
        assert run["config"]["lr"] == params["lr"] and run["config"]["env"] == "CartPole-v1"
    history = [row for run in wandb_runs for row in run["history"]]
    assert [row["training_iteration"] for row in history] == [1, 2, 3, 4, 5]
    assert [row[RETURN] for row in history] == progress

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file://{store}")
    experiment = client.get_experiment_by_name("CartPole-v1")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert (mlflow_run.info.run_name, mlflow_run.info.status) == (trial.name, "FINISHED")
    metric = client.get_metric_history(mlflow_run.info.run_id, RETURN)
    assert [(m.step, m.value) for m in metric] == list(zip([1, 2, 3, 4, 5], progress, strict=True))
    assert float(mlflow_run.data.params["lr"]) == params["lr"]
    assert not any(key.startswith("config/") for key in mlflow_run.data.metrics), "the config is params, not metrics"


def test_each_wandb_row_is_written_when_it_is_logged(tmp_path, monkeypatch):
    """CI's Slurm chain once lost its first job's last W&B row (iteration 6, while progress.csv and MLflow had
    it). W&B's log(step=N) holds row N back until a higher step or the run's finish, and the finish returned while
    W&B's service process still wrote the file, which Ray kills with the logging actor. The logging actor Tune
    starts per trial (here in a thread, reading a plain queue) now commits each row as it logs it: all 3 are in
    the run's file before the run is told to end (W&B's service writes it every 0.2 s here, 15 s by default); and
    when its run returns, W&B's service has exited."""
    import queue
    import struct
    import threading
    import time

    import wandb
    from google.protobuf.message import DecodeError
    from ray.air.integrations.wandb import _QueueItem

    from rlhpc.train.tracking_callbacks import WandbTrialDirCallback

    monkeypatch.setenv("WANDB_START_METHOD", "thread")  # what the actor sets for itself, kept out of later tests
    monkeypatch.chdir(tmp_path)  # the actor changes into its log dir
    items: queue.Queue = queue.Queue()
    actor = WandbTrialDirCallback._logger_actor_cls(
        logdir=str(tmp_path), queue=items, exclude=[], to_config=[], dir=str(tmp_path), mode="offline",
        project="rows", id="trial_1",
        settings=wandb.Settings(silent=True, x_transaction_log_flush_interval=0.2))  # W&B's default: 15 s
    logging = threading.Thread(target=actor.run)
    logging.start()
    for iteration in (1, 2, 3):
        items.put((_QueueItem.RESULT, {"training_iteration": iteration, RETURN: 10.0 * iteration}))

    def rows_written():
        try:
            (run,) = wandb_offline_runs(tmp_path)
        except (ValueError, AssertionError, struct.error, DecodeError):  # no file yet, or a record half written
            return []
        return [(row["training_iteration"], row[RETURN]) for row in run["history"]]

    deadline = time.monotonic() + 20
    while len(rows_written()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    before_the_end = rows_written()
    items.put((_QueueItem.END, None))
    logging.join(60)
    assert before_the_end == [(1, 10.0), (2, 20.0), (3, 30.0)], before_the_end
    assert rows_written() == before_the_end
    assert not children_named("wandb-core"), "W&B's service outlived the logging actor's run"


def children_named(name: str) -> list:
    """This process's children called `name`, from /proc/<pid>/stat ("pid (name) state ppid ...")."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended
            continue
        comm, _, rest = text.partition(" (")[2].rpartition(") ")
        if comm == name and int(rest.split()[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found
