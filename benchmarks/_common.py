"""What the benchmark commands share: timed trainer runs, tables, JSON, the machine's description."""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAINER = REPO / "simple_example" / "simple_trainer.py"


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def timed_trainer_run(*args, reward=None, timeout=900, storage=None) -> dict:
    """Runs the trainer from a cold process; times the first iteration and the first line whose
    mean return reaches `reward`, both from process start (imports and Ray start-up included).
    The results go to a temporary dir, or to `storage` (kept) when given."""
    with tempfile.TemporaryDirectory() as scratch:
        storage = storage or scratch
        cmd = [sys.executable, "-u", str(TRAINER), "--storage-path", storage, *map(str, args)]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        first_iter = solved = last_return = None
        steps = 0
        deadline = started + timeout
        for line in proc.stdout:
            now = time.perf_counter() - started
            if line.startswith("iter "):
                fields = line.split()
                first_iter = first_iter if first_iter is not None else now
                steps = int(fields[3].replace(",", ""))
                ret = fields[5]
                last_return = None if ret == "-" else float(ret)
                if reward is not None and solved is None and ret != "-" and float(ret) >= reward:
                    solved = now
            if time.perf_counter() > deadline:
                proc.kill()
                break
        proc.wait()
        return {"first_iteration_s": first_iter, "solved_s": solved, "env_steps": steps, "last_return": last_return,
                "exit_code": proc.returncode, "total_s": time.perf_counter() - started}


def summary(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(stat: dict) -> str:
    if not stat["n"]:
        return "not reached"
    return f"{stat['median']:.1f} s ({stat['min']:.1f}-{stat['max']:.1f}, n={stat['n']})"


def write_json(name: str, data: dict, out_dir=None) -> Path:
    out = Path(out_dir or REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path
