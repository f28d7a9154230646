"""Stopping a run with a signal, then --resume: nothing lost beyond one checkpoint interval."""

import json
import signal
import subprocess

from conftest import (
    PYTHON,
    REPO,
    RETURN,
    assert_return_is_the_mean_of_the_last_100_episodes,
    clean_env,
    error_lines,
    read_progress,
    run_script,
)

TRAINER = "simple_example/simple_trainer.py"


def test_signal_saves_a_checkpoint_and_resume_continues(tmp_path):
    """SIGTERM (scancel, pre-emption) here; SIGUSR1 (Slurm's --signal) stops and resumes the same way, tested in
    process by test_multi_agent.py and through Tune by the Slurm wall-time chain (test_slurm.py)."""
    sig = signal.SIGTERM
    env = clean_env(HOME=tmp_path)
    args = [PYTHON, str(REPO / TRAINER), "--storage-path", str(tmp_path), "--name", "run",
            "--checkpoint-freq", "0"]  # no periodic checkpoints: the one we resume from is the signal's
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signal after the trainer printed iteration 3 (progress.csv on disk can lag behind in bursts).
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("iter    3"):
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    stdout = "".join(seen) + stdout
    assert proc.returncode == 0, stderr[-3000:]
    assert f"stopped by {sig.name}; state and checkpoint saved" in stdout
    before = read_progress(tmp_path / "run")
    stopped_at = int(before[-1]["training_iteration"])
    assert stopped_at >= 3 and before[-1][RETURN] < 195, "the run finished before the signal"
    assert list(tmp_path.glob("run/*/checkpoint_000000")), "no checkpoint saved on the signal"

    # --resume takes the run's own flags (--checkpoint-freq 0 among them); after SIGTERM it also gets another
    # allocation, an env runner where the run sampled in the driver (elastic: allowed, recorded).
    elastic = ["--num-cpus", "1"]
    out = run_script(TRAINER, "--storage-path", tmp_path, "--name", "run", "--resume", *elastic, "--as-test", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming {tmp_path / 'run'} after iteration {stopped_at}" in out.stdout
    after = read_progress(tmp_path / "run")[len(before):]
    assert int(after[0]["training_iteration"]) == stopped_at + 1
    assert {r["fault_tolerance/num_healthy_workers"] for r in before} == {0}
    assert {r["fault_tolerance/num_healthy_workers"] for r in after} == {1}
    [params] = tmp_path.glob("run/*/params.json")
    assert json.loads(params.read_text())["num_env_runners"] == 0, "params.json no longer says how the run started"
    record = json.loads((tmp_path / "run" / "rlhpc_run_spec.json").read_text())
    assert record["flags"] == args[2:] and len(record["resumes"]) == 1
    assert record["resumes"][0]["changes"] == [{"flag": "--num-cpus", "from": 0, "to": 1, "trains": False}]
    assert after[0]["num_env_steps_sampled_lifetime"] > before[-1]["num_env_steps_sampled_lifetime"]
    assert after[-1][RETURN] >= 195
    # The 100-episode window is saved with the checkpoint: the resumed run goes on averaging the same episodes.
    assert_return_is_the_mean_of_the_last_100_episodes(before + after)

    # Resumed again once finished (a requeued job): one line, no new iteration; a lower --stop-iters is allowed.
    done = int(after[-1]["training_iteration"])
    out = run_script(TRAINER, "--storage-path", tmp_path, "--name", "run", "--resume", "--stop-iters", done - 1,
                     env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{tmp_path / 'run'} already met its stop criteria at iteration {done} (" in out.stdout
    assert "iter " not in out.stdout and len(read_progress(tmp_path / "run")) == len(before) + len(after)


def test_resume_without_an_experiment_is_one_line(tmp_path):
    out = run_script(TRAINER, "--resume", tmp_path / "nothing-here", env=clean_env(HOME=tmp_path))
    assert out.returncode == 2
    assert error_lines(out.stderr) == [(f"error: nothing to resume at {tmp_path / 'nothing-here'}: "
                                        "no experiment state there")]


CRASHING_ENV = '''
"""CartPole whose simulator fails at every step after CRASH_AFTER_STEPS steps in this process (rebuilding the env
does not help: the env guard gives up and the run fails), as a researcher's can when its licence server is gone."""
import os

import gymnasium
from gymnasium.envs.classic_control import CartPoleEnv


class CrashingCartPole(CartPoleEnv):
    steps = 0  # per process: the vectorized copies count together
    crashing = None  # decided at the first step past the limit

    def step(self, action):
        CrashingCartPole.steps += 1
        if CrashingCartPole.steps > int(os.environ.get("CRASH_AFTER_STEPS", 10**12)):
            if CrashingCartPole.crashing is None:  # CRASH_ONCE_MARKER: crash in the first process that gets here only
                marker = os.environ.get("CRASH_ONCE_MARKER")
                CrashingCartPole.crashing = not (marker and os.path.exists(marker))
                if marker:
                    open(marker, "w").close()
            if CrashingCartPole.crashing:
                raise RuntimeError("simulator lost its licence server")
        return super().step(action)


gymnasium.register("rlhpc_tests/CrashingCartPole-v0", entry_point=CrashingCartPole, max_episode_steps=200,
                   reward_threshold=195)
'''


def test_a_crash_in_training_keeps_the_results_and_resume_continues(tmp_path):
    """The env fails in iteration 6 at every step (the env guard rebuilds it, then gives up): progress stays, the
    last finished iteration (5) is saved beside the periodic checkpoint of 4, the traceback goes to error.txt, the
    console gets one line; with the env fixed, --resume carries on from iteration 5."""
    (tmp_path / "crashing_env.py").write_text(CRASHING_ENV)
    env = clean_env(HOME=tmp_path, PYTHONPATH=tmp_path)
    # A namespaced id (ns/Name-v0) too: its trial dir must still be one directory (the globs below).
    args = ["--name-env", "crashing_env:rlhpc_tests/CrashingCartPole-v0", "--storage-path", tmp_path / "results",
            "--name", "run", "--checkpoint-freq", 2]
    out = run_script(TRAINER, *args, env={**env, "CRASH_AFTER_STEPS": "11000"})  # iteration 6 (2,000 steps each)
    assert out.returncode == 1, out.stderr[-3000:]
    [error] = error_lines(out.stderr)
    assert error.startswith("error: training failed: RuntimeError: simulator lost its licence server")
    assert error.endswith("; iteration 5 saved in checkpoint_000002")
    assert "Traceback" not in out.stderr
    [error_txt] = (tmp_path / "results" / "run").glob("*/error.txt")
    assert "Traceback" in error_txt.read_text() and "licence server" in error_txt.read_text()
    before = read_progress(tmp_path / "results" / "run")
    assert [int(r["training_iteration"]) for r in before] == [1, 2, 3, 4, 5]
    assert list((tmp_path / "results" / "run").glob("*/checkpoint_000001")), "iteration 4's checkpoint is gone"

    out = run_script(TRAINER, *args, "--resume", "--as-test", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(iteration 5)" in out.stdout
    after = read_progress(tmp_path / "results" / "run")[len(before):]
    assert int(after[0]["training_iteration"]) == 6
    assert after[-1][RETURN] >= 195
    assert_return_is_the_mean_of_the_last_100_episodes(before + after)


def test_max_failures_restarts_a_crashed_trial_from_its_checkpoint_then_names_the_env_error(tmp_path):
    """--max-failures 1 on a local run: Tune runs the trial. Its env fails for good in iteration 5 of each process:
    Tune restarts the trial from iteration 4's checkpoint in a new process, which trains iterations 5-8 and fails in
    9; then the run ends with one line naming the env's own error, the rows of both attempts in one table."""
    (tmp_path / "crashing_env.py").write_text(CRASHING_ENV)
    env = clean_env(HOME=tmp_path, PYTHONPATH=tmp_path, CRASH_AFTER_STEPS=9000)
    out = run_script(TRAINER, "--name-env", "crashing_env:rlhpc_tests/CrashingCartPole-v0", "--checkpoint-freq", 2,
                     "--max-failures", 1, "--storage-path", tmp_path / "results", "--name", "run", env=env)
    assert out.returncode == 1, out.stderr[-3000:]
    [error] = error_lines(out.stderr)
    assert error.startswith("error: training failed: RuntimeError: simulator lost its licence server")
    rows = read_progress(tmp_path / "results" / "run")
    assert [int(r["training_iteration"]) for r in rows] == list(range(1, 9))
    assert list((tmp_path / "results" / "run").glob("*/error.txt"))
    assert len(list((tmp_path / "results" / "run").glob("*/checkpoint_*"))) >= 2  # iterations 4 and 8 (or 6, 8)
