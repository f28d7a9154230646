"""One local trial, trained in this process instead of in a Tune actor.

Tune runs every trial in an actor: a second Python process that imports RLlib and torch again
and builds the algorithm there, ~4 s on 2 cores before the first iteration (benchmarks/README.md).
For the common case, one trial on the local machine, the trainer trains here and writes what
Tune would, where Tune would: <storage>/<name>/<trial>/ with progress.csv, result.json,
params.json, TensorBoard events and checkpoint_NNNNNN dirs. It stops and checkpoints on the same
signals and resumes with --resume. Searches and cluster runs keep Tune (placement, retries);
rlhpc.run.spec decides which backend a run gets.

What a trial does is shared with the Tune backend: the files are rlhpc.train.trial_files', the stop rule
rlhpc.train.stop_signal's, the tracking rlhpc.train.tracking's, and the 100-episode window, evaluation and best
checkpoint the RLlib callback's (rlhpc.algo.metrics). What is this module's own is Tune's part: the loop, when to
checkpoint, and the run's state file (its checkpoints), which Tune keeps in its experiment state.

Private APIs used here, and why: `Algorithm._iteration` and `_time_total`, Trainable's counters. Restoring from a
checkpoint path restarts them at 0 (Tune keeps them in its own trial state and hands them to restore() in a private
_TrainingResult); setting them is the only way for the restored trial's results to go on counting.
"""

import json
import os
import sys
import traceback
import uuid
from datetime import datetime
from typing import Any

from rlhpc.algo import metrics
from rlhpc.algo.config import algorithm_class
from rlhpc.outputs.report import (
    Outcome,
    ProgressLine,
    TrialOutcome,
    training_failed,
)
from rlhpc.run import experiment
from rlhpc.run.results import checkpoint_due, stop_reached
from rlhpc.run.resume import stop_changed
from rlhpc.train import tracking
from rlhpc.train.stop_signal import StopSignal, grace_s
from rlhpc.train.trial_files import TrialFiles


def warm_up() -> None:
    """Call before ray.init: torch imports its compiler stack (~1.3 s) at the first optimizer, and
    ray.init mostly waits for the raylet to register, so that import runs meanwhile (7.0 -> 6.2 s
    to the first iteration, benchmarks/README.md)."""
    import threading

    threading.Thread(target=__import__, args=("torch._dynamo",), daemon=True).start()


def train(spec, config, stop_signal: StopSignal) -> Outcome:  # noqa: C901 -- the trial loop: stop, checkpoint, cleanup
    """Builds (or restores) the algorithm here and trains until a stop criterion or a signal."""
    experiment_dir = spec.output.resume_dir or spec.output.experiment_dir
    state_path = os.path.join(experiment_dir, experiment.STATE_FILE)
    if spec.output.resume_dir:  # as with Tune, a resumed run keeps the stop criteria it started with ...
        with open(state_path) as f:
            state = json.load(f)
        # ... unless --allow-changes changed them
        if stop_changed(spec.output.changes):
            state["stop"] = dict(spec.stop.criteria)
    else:
        trial = f"{spec.training.algo}_{experiment.path_safe(spec.env.source.label)}_{datetime.now():%Y-%m-%d_%H-%M-%S}"
        # The id Tune would give the trial (W&B names its run by it), kept for resumes.
        state = {"trial": trial, "trial_id": uuid.uuid4().hex[:8], "stop": dict(spec.stop.criteria), "checkpoints": []}
    stop = state["stop"]
    trial_dir = os.path.join(experiment_dir, state["trial"])

    progress, flag = ProgressLine(), stop_signal
    flag.catch_all()  # a second signal raises KeyboardInterrupt here
    result: dict
    algo: Any  # the RLlib Algorithm, once built (checkpoint() saves it)
    result, error, algo, files, tracked = {}, None, None, None, None

    def checkpoint():
        name = f"checkpoint_{len(state['checkpoints']):06d}"
        algo.save(os.path.join(trial_dir, name))
        state["checkpoints"].append({"dir": name, "training_iteration": result["training_iteration"],
                                     "time_total_s": result["time_total_s"]})
        experiment.write_json(state_path, state)

    os.makedirs(trial_dir, exist_ok=True)
    experiment.write_json(state_path, state)  # killed before the first checkpoint, --resume still finds the run
    try:
        algo = _build(algorithm_class(spec.training.algo), config, trial_dir, state["checkpoints"])
        config_dict = config.to_dict()
        # Rows after the last checkpoint (all rows, with none) come again: dropped first.
        after = state["checkpoints"][-1]["training_iteration"] if state["checkpoints"] else 0
        files = TrialFiles(trial_dir, config_dict, after_iteration=after, tensorboard=True)
        trial_id = state.get("trial_id") or state["trial"]  # runs started before trial ids were kept: the name
        tracked = tracking.InProcessTracking(spec, tracking.InProcessTrial(trial_dir, trial_id, config_dict))
        while True:
            result = algo.train()
            files.write(result)
            tracked.result(result)
            print(progress.line(result), flush=True)
            done = stop_reached(result, stop)
            if flag.received:
                flag.iteration_ended()
            if checkpoint_due(result, spec.output.checkpoint_freq) or done or flag.received:
                checkpoint()
            if done or flag.received:
                break
    except KeyboardInterrupt:
        if flag.grace_over:  # SIGTERM's grace passed mid-iteration (a hung simulator): keep the last finished one
            saved = _save_last_iteration(algo, result, state, checkpoint)
            print(f"warning: iteration {result.get('training_iteration', 0) + 1} did not end within "
                  f"{grace_s():g} s of {flag.received}: stopped there" + (saved or "; nothing newer to save"),
                  file=sys.stderr, flush=True)
            _end_waiting_envs(algo)
        else:
            error = "stopped by a second signal before the checkpoint; the previous checkpoint is kept"
    except Exception as e:  # noqa: BLE001 -- any failure in training: keep the results, report one line
        with open(os.path.join(trial_dir, "error.txt"), "w") as f:
            f.write(traceback.format_exc())
        error = training_failed(traceback.format_exc(), e, trial_dir)
        error += _save_last_iteration(algo, result, state, checkpoint)
    finally:
        if files:
            files.close()
        if tracked:
            tracked.end(failed=error is not None)
        if algo:
            algo.stop()
    last_checkpoint = os.path.join(trial_dir, state["checkpoints"][-1]["dir"]) if state["checkpoints"] else None
    outcome = TrialOutcome(path=trial_dir, metrics=result, checkpoint=last_checkpoint, error=error)
    return Outcome(experiment_dir, [outcome], None if error else flag.received, stop)


def resumed_from(resume_dir: str) -> tuple:
    """-> (the stop criteria the resumed run trains under, the result of its last checkpoint or None when it has
    none): where a --resume goes on from."""
    with open(os.path.join(resume_dir, experiment.STATE_FILE)) as f:
        state = json.load(f)
    if not state["checkpoints"]:
        return state["stop"], None
    iteration = state["checkpoints"][-1]["training_iteration"]
    results = os.path.join(resume_dir, state["trial"], "result.json")
    last = {"training_iteration": iteration}
    if os.path.exists(results):
        with open(results) as f:
            for line in f:
                row = json.loads(line) if line.strip() else {}
                if row.get("training_iteration") == iteration:
                    last = row
    return state["stop"], last


def finished(spec) -> bool:
    """A resumed run whose last checkpoint already meets its stop criteria (with the --stop-* given now): one line,
    and nothing trained (no new iteration, no new checkpoint)."""
    stop, last = resumed_from(spec.output.resume_dir)
    if stop_changed(spec.output.changes):
        stop = dict(spec.stop.criteria)
    if last is None or not stop_reached(last, stop):
        return False
    print(f"{spec.output.resume_dir} already met its stop criteria at iteration {last['training_iteration']} ("
          + ", ".join(f"{k} >= {v:g}" for k, v in stop.items()) + "): nothing left to train; give a higher --stop-* "
          "to train longer", flush=True)
    return True


def _save_last_iteration(algo, result: dict, state: dict, checkpoint) -> str:
    """After a failure: a checkpoint of the last finished iteration when it has none yet, so that nothing trained is
    lost (the weights are still that iteration's: a failure in sampling comes before the update). -> what to add to
    the error line."""
    done = result.get("training_iteration")
    saved = state["checkpoints"][-1]["training_iteration"] if state["checkpoints"] else None
    if algo is None or not done or done == saved:
        return ""
    try:
        checkpoint()
    except Exception as e:  # noqa: BLE001 -- the run is failing already: say the save failed too, keep the cause
        return f"; no checkpoint of iteration {done} could be saved ({type(e).__name__}: {e})"
    return f"; iteration {done} saved in {state['checkpoints'][-1]['dir']}"


def _end_waiting_envs(algo) -> None:
    """After SIGTERM's grace: the driver's async env copies may still wait on a hung simulator, and closing them
    would wait with them. Their processes are killed instead (SIGKILL: forked from this one, they kept its SIGTERM
    handler), and their simulators die with them (rlhpc.envs.identity)."""
    vector = getattr(getattr(getattr(algo, "env_runner", None), "env", None), "unwrapped", None)
    processes = getattr(vector, "processes", None)  # Gymnasium's AsyncVectorEnv
    if vector is None or processes is None:
        return
    for process in processes:
        if process.is_alive():
            process.kill()
    vector.close(terminate=True)


def _build(algo_cls, config, trial_dir: str, checkpoints: list):
    """The algorithm, restored from the last checkpoint when there is one."""
    import torch

    # The driver holds one CPU for the learner, as a Tune actor would (Ray starts those with
    # OMP_NUM_THREADS=1); on 2 cores a second torch thread fights the env: 20 % slower, measured.
    torch.set_num_threads(1)
    algo = algo_cls(config=config)
    state = metrics.trial_state(algo)
    if state:  # rlhpc.algo.metrics saves the best checkpoint there
        state.trial_dir = trial_dir
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
