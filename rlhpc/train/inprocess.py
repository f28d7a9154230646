"""One local trial, trained in this process instead of in a Tune actor.

Tune runs every trial in an actor: a second Python process that imports RLlib and torch again
and builds the algorithm there, ~4 s on 2 cores before the first iteration (benchmarks/README.md).
For the common case, one trial on the local machine, the trainer trains here and writes what
Tune would, where Tune would: <storage>/<name>/<trial>/ with progress.csv, result.json,
params.json, TensorBoard events and checkpoint_NNNNNN dirs. It stops and checkpoints on the same
signals and resumes with --resume. Searches and cluster runs keep Tune (placement, retries);
rlhpc.run.spec decides which backend a run gets.
"""

import csv
import json
import logging
import os
import signal
import traceback
import uuid
from datetime import datetime

from rlhpc.algo.config import algorithm_class
from rlhpc.outputs.report import (
    STOP_SIGNALS,
    EarlyStop,
    Outcome,
    ProgressLine,
    TrialOutcome,
    announce_stop,
    training_failed,
)
from rlhpc.run import experiment
from rlhpc.run.results import as_number, stop_reached
from rlhpc.train import tracking


def warm_up() -> None:
    """Call before ray.init: torch imports its compiler stack (~1.3 s) at the first optimizer, and
    ray.init mostly waits for the raylet to register, so that import runs meanwhile (7.0 -> 6.2 s
    to the first iteration, benchmarks/README.md)."""
    import threading

    threading.Thread(target=__import__, args=("torch._dynamo",), daemon=True).start()


class TrialFiles:
    """progress.csv, result.json and TensorBoard events, as Tune's logger callbacks write them."""

    def __init__(self, trial_dir: str, config_dict: dict):
        from ray.tune.utils.util import SafeFallbackEncoder

        self.dir = trial_dir
        os.makedirs(trial_dir, exist_ok=True)
        params = os.path.join(trial_dir, "params.json")
        if not os.path.exists(params):  # a resumed trial keeps the config it started with
            with open(params, "w") as f:
                json.dump(config_dict, f, indent=2, sort_keys=True, cls=SafeFallbackEncoder)
        self._encoder = SafeFallbackEncoder
        progress = os.path.join(trial_dir, "progress.csv")
        header = experiment.progress_header(trial_dir)  # a resumed run keeps the columns it started with
        self._csv_file = open(progress, "a", newline="")  # noqa: SIM115 -- open for the whole run
        self._csv = csv.DictWriter(self._csv_file, header, extrasaction="ignore") if header else None
        self._json_file = open(os.path.join(trial_dir, "result.json"), "a")  # noqa: SIM115
        self._tb = None

    def write(self, result: dict) -> None:
        from ray.tune.utils import flatten_dict

        flat = flatten_dict({k: v for k, v in result.items() if k != "config"}, delimiter="/")
        if self._csv is None:
            self._csv = csv.DictWriter(self._csv_file, list(flat), extrasaction="ignore")
            self._csv.writeheader()
        self._csv.writerow(flat)
        self._csv_file.flush()
        self._json_file.write(json.dumps(result, cls=self._encoder) + "\n")
        self._json_file.flush()
        self._tensorboard(flat)

    def _tensorboard(self, flat: dict) -> None:
        from tensorboardX import SummaryWriter

        if self._tb is None:
            self._tb = SummaryWriter(self.dir, flush_secs=30)
        step = flat["training_iteration"]
        for key, value in flat.items():
            if as_number(value) is not None:
                self._tb.add_scalar(f"ray/tune/{key}", value, global_step=step)
        self._tb.flush()

    def close(self) -> None:
        for f in (self._csv_file, self._json_file):
            f.close()
        if self._tb is not None:
            self._tb.close()


class SignalFlag:
    """The first SIGUSR1/SIGTERM/SIGINT asks for a checkpoint after this iteration; a second stops now."""

    def __init__(self):
        self.received = EarlyStop.received
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), self._on_signal)

    def _on_signal(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        announce_stop(self.received)


def train(spec, config) -> Outcome:
    """Builds (or restores) the algorithm here and trains until a stop criterion or a signal."""
    experiment_dir = spec.resume_dir or spec.experiment_dir
    state_path = os.path.join(experiment_dir, experiment.STATE_FILE)
    if spec.resume_dir:  # as with Tune, a resumed run keeps the stop criteria it started with ...
        with open(state_path) as f:
            state = json.load(f)
        if any(flag.startswith("--stop") for flag, *_ in spec.changes):  # ... unless --allow-changes changed them
            state["stop"] = dict(spec.stop)
    else:
        trial = f"{spec.algo}_{experiment.path_safe(spec.env.label)}_{datetime.now():%Y-%m-%d_%H-%M-%S}"
        # The id Tune would give the trial (W&B names its run by it), kept for resumes.
        state = {"trial": trial, "trial_id": uuid.uuid4().hex[:8], "stop": dict(spec.stop), "checkpoints": []}
    stop = state["stop"]
    trial_dir = os.path.join(experiment_dir, state["trial"])

    progress, flag = ProgressLine(), SignalFlag()
    result, error, algo, files, tracked = {}, None, None, None, None

    def checkpoint():
        name = f"checkpoint_{len(state['checkpoints']):06d}"
        algo.save(os.path.join(trial_dir, name))
        state["checkpoints"].append({"dir": name, "training_iteration": result["training_iteration"],
                                     "time_total_s": result["time_total_s"]})
        experiment.write_json(state_path, state)

    # RLlib logs an env's failure with its traceback, then raises it to us: the traceback goes to error.txt.
    logging.getLogger("ray.rllib").addFilter(
        lambda record: "restart_failed_sub_environments' is False" not in record.getMessage())
    os.makedirs(trial_dir, exist_ok=True)
    experiment.write_json(state_path, state)  # killed before the first checkpoint, --resume still finds the run
    try:
        algo = _build(algorithm_class(spec.algo), config, trial_dir, state["checkpoints"])
        config_dict = config.to_dict()
        files = TrialFiles(trial_dir, config_dict)
        trial_id = state.get("trial_id") or state["trial"]  # runs started before trial ids were kept: the name
        tracked = tracking.InProcessTracking(spec, tracking.InProcessTrial(trial_dir, trial_id, config_dict))
        while True:
            result = algo.train()
            files.write(result)
            tracked.result(result)
            print(progress.line(result), flush=True)
            done = stop_reached(result, stop)
            periodic = spec.checkpoint_freq and result["training_iteration"] % spec.checkpoint_freq == 0
            if periodic or done or flag.received:
                checkpoint()
            if done or flag.received:
                break
    except KeyboardInterrupt:
        error = "stopped by a second signal before the checkpoint; the previous checkpoint is kept"
    except Exception as e:  # noqa: BLE001 -- any failure in training: keep the results, report one line
        with open(os.path.join(trial_dir, "error.txt"), "w") as f:
            f.write(traceback.format_exc())
        error = training_failed(traceback.format_exc(), e, trial_dir)
    finally:
        if files:
            files.close()
        if tracked:
            tracked.end(failed=error is not None)
        if algo:
            algo.stop()
    last_checkpoint = os.path.join(trial_dir, state["checkpoints"][-1]["dir"]) if state["checkpoints"] else None
    trial = TrialOutcome(path=trial_dir, metrics=result, checkpoint=last_checkpoint, error=error)
    return Outcome(experiment_dir, [trial], None if error else flag.received, stop)


def _build(algo_cls, config, trial_dir: str, checkpoints: list):
    """The algorithm, restored from the last checkpoint when there is one."""
    import torch

    # The driver holds one CPU for the learner, as a Tune actor would (Ray starts those with
    # OMP_NUM_THREADS=1); on 2 cores a second torch thread fights the env: 20 % slower, measured.
    torch.set_num_threads(1)
    algo = algo_cls(config=config)
    algo.__dict__["_rlhpc_trial_dir"] = trial_dir  # rlhpc.algo.metrics saves the best checkpoint there
    try:  # outside Tune a Trainable also makes an empty dir under ~/ray_results; ours is trial_dir
        os.rmdir(algo.logdir)
    except OSError:
        pass  # not empty or already gone: not ours to remove
    if checkpoints:
        last = checkpoints[-1]
        algo.restore(os.path.join(trial_dir, last["dir"]))
        # Restoring from a path restarts Trainable's counters at 0 (Tune keeps them in its own trial state).
        algo._iteration, algo._time_total = last["training_iteration"], last["time_total_s"]
        print(f"resumed from {os.path.join(trial_dir, last['dir'])} (iteration {last['training_iteration']})",
              flush=True)
    return algo
