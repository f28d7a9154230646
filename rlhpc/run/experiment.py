"""The experiment folder: where a run writes, what it records, and what --resume finds there.

    <storage-path>/<name>/                 the experiment dir: one per run (<name>_2, _3, ... when taken)
        rlhpc_run_spec.json                the resolved run (rlhpc.run.spec) that started it: env source, flags;
                                           then one entry per --resume (when, which job, what changed); its
                                           JSON form is rlhpc.run.records.RunRecord's
        rlhpc_run.json                     a local in-process run's state (its trial dir, stop, checkpoints)
        experiment_state-*.json, ...       Tune's state, for runs that went through Tune
        <trial>/progress.csv, params.json, result.json, events.out.tfevents.*, checkpoint_NNNNNN/

Both backends (rlhpc.train.inprocess, rlhpc.train.tune_run) and evaluate take these names and rules from here.
"""

import csv
import glob
import json
import os
import re
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from rlhpc.errors import UserError
from rlhpc.run.records import ResumeEntry, RunRecord

STATE_FILE = "rlhpc_run.json"  # the in-process backend's state
RUN_SPEC_FILE = "rlhpc_run_spec.json"  # what rlhpc.run.spec resolved for the run, written when it starts


def path_safe(name: str) -> str:
    """An env name as one directory name: "ale_py:ALE/Pong-v5" -> "ale_py-ALE-Pong-v5"."""
    return re.sub(r"[^\w.-]+", "-", name)


def experiment_dir(storage_path: str, name: str) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(storage_path)), name)


def claim(storage_path: str, name: str) -> tuple:
    """A new run's own experiment dir -> (name, path): <name>, else <name>_2, <name>_3, ... for the first one
    no other run holds. Claimed by creating its run record exclusively, so runs that start at the same moment
    with one --name (a job array) each get their own dir, trials and resumable state."""
    for candidate, path in candidates(storage_path, name):
        if is_run(path):
            continue
        try:
            os.makedirs(path, exist_ok=True)
            os.close(os.open(os.path.join(path, RUN_SPEC_FILE), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue  # another run got there first
        except OSError as e:
            raise UserError(f"cannot start a run in {path}: {e.strerror or e}") from None
        return candidate, path
    raise UserError(f"no free experiment name like {name!r} in {storage_path}")


def candidates(storage_path: str, name: str):
    """(name, path) of the dirs claim tries, in its order: <name>, <name>_2, <name>_3, ..."""
    for k in range(1, 10_000):
        candidate = name if k == 1 else f"{name}_{k}"
        yield candidate, experiment_dir(storage_path, candidate)


def dir_to_claim(storage_path: str, name: str) -> tuple:
    """(name, path) of the dir claim would take now, creating nothing (--print-config shows it; a run starting
    beside it may still take it first)."""
    return next(((candidate, path) for candidate, path in candidates(storage_path, name) if not is_run(path)),
                (name, experiment_dir(storage_path, name)))


def is_run(path: str) -> bool:
    """Whether a run (ours, or Tune's from before runs had records) has used this experiment dir."""
    return os.path.isfile(os.path.join(path, RUN_SPEC_FILE)) or has_inprocess_state(path) \
        or bool(glob.glob(os.path.join(glob.escape(path), "experiment_state-*.json")))


def runs_named(storage_path: str, name: str) -> list:
    """The experiment dirs of the runs started with --name NAME: NAME, NAME_2, ... (claim's names)."""
    root = os.path.abspath(os.path.expanduser(storage_path))
    pattern = re.compile(re.escape(name) + r"(_\d+)?")
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = [os.path.join(root, n) for n in names if pattern.fullmatch(n) and is_run(os.path.join(root, n))
             and asked_for(read_record(os.path.join(root, n)), name)]
    return sorted(found, key=lambda p: (len(p), p))


def asked_for(record: RunRecord | None, name: str) -> bool:
    """Whether a run's dir was claimed for --name NAME (not a run *named* exp_2); runs without a record, or from
    before records kept the name asked, count as asked for."""
    return record is None or record.name_asked is None or record.name_asked == name


def check_writable(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        # A file of this run's own, gone when closed: runs started together (a job array) check the same folder.
        with tempfile.TemporaryFile(dir=path, prefix=".rlhpc-write-test-"):
            pass
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


def slurm_job() -> str | None:
    """The Slurm job this process runs in, as `scontrol` names it (an array task: ARRAYJOB_TASK); a requeued
    job keeps it."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def record_run(spec_record: dict, experiment_path: str, name_asked: str) -> None:
    """The resolved run, beside its trials; written once, when the run starts (a resume adds to it)."""
    os.makedirs(experiment_path, exist_ok=True)
    write_record(experiment_path, RunRecord(spec=MappingProxyType(dict(spec_record)), name_asked=name_asked,
                                            started=time.strftime("%Y-%m-%d %H:%M:%S"), slurm_job=slurm_job()))


def record_resume(experiment_path: str, from_iteration: int, flags, changes) -> None:
    """One more entry in the run record's "resumes": when, in which job, from which iteration, the flags given and
    what they changed (rlhpc.run.records.Change each)."""
    record = read_record(experiment_path)
    if record is None:
        return  # a run from before runs had records
    entry = ResumeEntry(at=time.strftime("%Y-%m-%d %H:%M:%S"), slurm_job=slurm_job(), from_iteration=from_iteration,
                        flags=tuple(flags), changes=tuple(changes))
    write_record(experiment_path, record.with_resume(entry))


def write_record(experiment_path: str, record: RunRecord) -> None:
    write_json(os.path.join(experiment_path, RUN_SPEC_FILE), record.to_json())


def last_iteration(experiment_path: str) -> int:
    """The highest training_iteration in the run's progress.csv files (0: none yet)."""
    last = 0
    for progress in glob.glob(os.path.join(glob.escape(experiment_path), "*", "progress.csv")):
        try:
            with open(progress, newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        last = max(last, int(float(row.get("training_iteration") or 0)))
                    except (TypeError, ValueError):
                        pass
        except (OSError, csv.Error):  # cut short by a kill: what could be read counts
            pass
    return last


def read_run_record(trial_dir) -> RunRecord:
    """The run record of the experiment a trial dir belongs to (an empty one for runs without a record)."""
    return read_record(Path(trial_dir).parent) or RunRecord.from_json({})


def read_record(experiment_path) -> RunRecord | None:
    """An experiment dir's run record (None for runs without one, or whose record is still being written)."""
    path = Path(experiment_path) / RUN_SPEC_FILE
    try:
        with open(path) as f:
            text = f.read()
        data = json.loads(text) if text else None  # empty: just claimed, not written yet
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return RunRecord.from_json(data) if isinstance(data, dict) else None
