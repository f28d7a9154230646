"""The experiment folder: where a run writes, what it records, and what --resume finds there.

    <storage-path>/<name>/                 the experiment dir (one per --name)
        rlhpc_run_spec.json                the resolved run (rlhpc.spec) that started it: env source, flags
        rlhpc_run.json                     a local in-process run's state (its trial dir, stop, checkpoints)
        experiment_state-*.json, ...       Tune's state, for runs that went through Tune
        <trial>/progress.csv, params.json, result.json, events.out.tfevents.*, checkpoint_NNNNNN/

Both backends (rlhpc.inprocess, rlhpc.tune_run) and evaluate take these names and rules from here.
"""

import csv
import json
import os
import re
from pathlib import Path

from rlhpc.errors import UserError

STATE_FILE = "rlhpc_run.json"  # the in-process backend's state
RUN_SPEC_FILE = "rlhpc_run_spec.json"  # what rlhpc.spec resolved for the run, written when it starts


def path_safe(name: str) -> str:
    """An env name as one directory name: "ale_py:ALE/Pong-v5" -> "ale_py-ALE-Pong-v5"."""
    return re.sub(r"[^\w.-]+", "-", name)


def experiment_dir(storage_path: str, name: str) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(storage_path)), name)


def check_writable(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, ".rlhpc-write-test"), "w"):
            pass
        os.remove(os.path.join(path, ".rlhpc-write-test"))
    except OSError as e:
        raise UserError(f"cannot write results to {path}: {e.strerror or e}") from None


def has_inprocess_state(path: str) -> bool:
    return os.path.isfile(os.path.join(path, STATE_FILE))


def find_resume(resume, default_dir: str) -> str:
    """The experiment dir --resume names (True: this run's); an error when nothing is saved there."""
    path = os.path.abspath(os.path.expanduser(resume if isinstance(resume, str) else default_dir))
    if has_inprocess_state(path):
        return path
    from ray import tune

    if not tune.Tuner.can_restore(path):
        raise UserError(f"nothing to resume at {path}: no experiment state there")
    return path


def progress_header(trial_dir: str):
    """The columns of an existing progress.csv (None: none yet): a resumed run appends under its old header,
    whatever order its first new result lists the keys in."""
    progress = os.path.join(trial_dir, "progress.csv")
    if not (os.path.exists(progress) and os.path.getsize(progress)):
        return None
    with open(progress, newline="") as f:
        return next(csv.reader(f), None)


def write_json(path: str, data: dict) -> None:
    """Written whole or not at all: a kill mid-write leaves the previous file."""
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2, default=repr)
    os.replace(path + ".tmp", path)


def record_run(spec_record: dict, experiment_path: str) -> None:
    """The resolved run, beside its trials (a resume keeps the record of how the run started)."""
    os.makedirs(experiment_path, exist_ok=True)
    write_json(os.path.join(experiment_path, RUN_SPEC_FILE), spec_record)


def read_run_record(trial_dir) -> dict:
    """The run record of the experiment a trial dir belongs to ({} for runs without one)."""
    path = Path(trial_dir).parent / RUN_SPEC_FILE
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return record if isinstance(record, dict) else {}
