"""The one writer of a trial's progress.csv, result.json and params.json (and params.pkl), for both backends.

The in-process backend writes through it directly; a Tune run through rlhpc.train.tune_run.TrialFilesCallback, with
Tune's own CSV/JSON loggers turned off. Two rules Tune's loggers do not keep: progress.csv stays aligned across
--resume (Tune appends under the old header but with the columns of the resumed process's first result, in whatever
order they come: the return column then held another metric; here the existing header decides the columns), and
params.json stays the config the trial started with (Tune rewrites it on every restore, and the record of how the
run started would be lost). And a trial that goes on from a checkpoint first drops the rows written after it
(`after_iteration`): they describe training the checkpoint does not hold, and the iterations after it come again, so
progress.csv's iterations stay strictly increasing (a run resumed with no checkpoint starts its files over).
"""

import csv
import json
import os
from typing import Any

from rlhpc.run import experiment
from rlhpc.run.results import as_number


class TrialFiles:
    """Files as Tune's logger callbacks write them, appended to when the trial goes on. params_pickle: also
    params.pkl, as Tune's JSON logger writes it (Tune runs). tensorboard: TensorBoard events too (the in-process
    trial; a Tune run keeps Tune's own TensorBoard logger, which also writes the hparams at a trial's end)."""

    def __init__(self, trial_dir: str, config: dict, *, after_iteration: int | None = None,
                 params_pickle: bool = False, tensorboard: bool = False):
        from ray.tune.utils.util import SafeFallbackEncoder

        self.dir = trial_dir
        os.makedirs(trial_dir, exist_ok=True)
        params = os.path.join(trial_dir, "params.json")
        if not os.path.exists(params):  # a resumed trial keeps the config it started with
            with open(params, "w") as f:
                json.dump(config, f, indent=2, sort_keys=True, cls=SafeFallbackEncoder)
            if params_pickle:
                import cloudpickle

                with open(os.path.join(trial_dir, "params.pkl"), "wb") as f:
                    cloudpickle.dump(config, f)
        self._encoder = SafeFallbackEncoder
        progress = os.path.join(trial_dir, "progress.csv")
        if after_iteration is not None:
            _drop_rows_after(trial_dir, after_iteration)
        header = experiment.progress_header(trial_dir)  # a resumed run keeps the columns it started with
        self._csv_file = open(progress, "a", newline="")  # noqa: SIM115 -- open for the whole run
        self._csv = csv.DictWriter(self._csv_file, header, extrasaction="ignore") if header else None
        self._json_file = open(os.path.join(trial_dir, "result.json"), "a")  # noqa: SIM115
        self._tb: Any = None  # tensorboardX's SummaryWriter (untyped), opened at the first result
        self._tensorboard = tensorboard

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
        if self._tensorboard:
            self._write_tensorboard(flat)

    def _write_tensorboard(self, flat: dict) -> None:
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


def _drop_rows_after(trial_dir: str, iteration: int) -> None:
    """progress.csv and result.json without the rows of iterations after `iteration`."""
    progress = os.path.join(trial_dir, "progress.csv")
    if os.path.exists(progress):
        with open(progress, newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            column = rows[0].index("training_iteration") if "training_iteration" in rows[0] else None
            kept = [row for row in rows[1:] if column is None or _iteration(row[column]) <= iteration]
            if len(kept) < len(rows) - 1:
                with open(progress, "w", newline="") as f:
                    csv.writer(f).writerows([rows[0], *kept] if kept else [])
    results = os.path.join(trial_dir, "result.json")
    if os.path.exists(results):
        with open(results) as f:
            lines = [line for line in f if line.strip()]
        kept_lines = [line for line in lines if _iteration(json.loads(line).get("training_iteration")) <= iteration]
        if len(kept_lines) < len(lines):
            with open(results, "w") as f:
                f.writelines(kept_lines)


def _iteration(value: Any) -> float:
    """A row's training_iteration, from CSV text or JSON; a row without one is kept (0)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0
