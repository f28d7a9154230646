"""Hyperparameter search: real trials side by side, the best one named and checkable."""

import csv
import json
import os
import re
import signal
import subprocess

import pytest
from conftest import PYTHON, REPO, RETURN, clean_env, error_lines, run_module, run_script

TRAINER = "simple_example/simple_trainer.py"


def test_grid_search_runs_every_trial_and_names_the_fastest(tmp_path):
    out = run_script(TRAINER, "--grid", "lr=[1e-3,3e-4]", "--grid", "model_config.fcnet_hiddens=[[32],[64]]",
                     "--stop-reward", 25, "--stop-iters", 4, "--metric", "steps_to_reward", "--seed", 0,
                     "--storage-path", tmp_path, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    trials = sorted(p for p in (tmp_path / "CartPole-v0").iterdir() if p.is_dir())
    assert len(trials) == 4
    tried = []
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        tried.append({"lr": params["lr"], "model_config.fcnet_hiddens": params["_model_config"]["fcnet_hiddens"]})
        assert (trial / "progress.csv").stat().st_size > 0  # every trial reported
    assert sorted(map(json.dumps, tried)) == sorted(json.dumps({"lr": lr, "model_config.fcnet_hiddens": h})
                                                    for lr in (1e-3, 3e-4) for h in ([32], [64]))
    best = re.search(r"^best: (\{.*\})  env steps to reach the stop reward = (\d+)  \((\S+)\)$", out.stdout,
                     re.MULTILINE)
    assert best, out.stdout[-2000:]
    best_config, best_steps, best_dir = json.loads(best.group(1)), int(best.group(2)), best.group(3)
    assert best_config in tried
    finals = {}  # trial dir -> env steps when it reached the stop reward
    for trial in trials:
        with open(trial / "progress.csv") as f:
            last = list(csv.DictReader(f))[-1]
        if float(last[RETURN]) >= 25:
            finals[trial.name] = int(float(last["num_env_steps_sampled_lifetime"]))
    assert finals and best_steps == min(finals.values()) and finals[best_dir] == best_steps
    winner = tmp_path / "CartPole-v0" / "best_trial.yaml"  # its round trip: unit/test_experiment_files.py
    assert winner.exists() and f"best trial's config: {winner} " in out.stdout


def test_asha_stops_a_trial_that_cannot_learn_at_its_first_rung_across_a_signal_and_resume(tmp_path):
    """Three trials, one at a time: the lr=1e-7 one comes last and is below the others' return at iteration 2, so
    ASHA stops it there; the decision is in the output and in rlhpc_scheduler.json. Slurm's wall-time signal
    (SIGUSR1) comes once the first trial is done: --resume keeps it done (not trained again), continues the others
    with ASHA's rungs as they were, and refuses a changed search space; the job's status says stopped (to requeue),
    then done (a trial ASHA stopped has nothing left to train). One at a time, not two: two trials started
    together end together, and a signal after the first one's end could find every trial ended by the time it was
    handled (1 run in 8 here)."""
    env = clean_env(HOME=tmp_path, RLHPC_STATUS_FILE=tmp_path / "status.json")  # as slurm/ray_cluster.sh sets it
    flags = ["--grid", "lr=[1e-3,3e-4,1e-7]", "--num-cpus", "0", "--stop-iters", "4", "--seed", "0",
             "--scheduler", "asha", "--grace-period", "2", "--reduction-factor", "2", "--max-concurrent", "1",
             "--storage-path", str(tmp_path), "--name", "asha"]
    proc = subprocess.Popen([PYTHON, str(REPO / TRAINER), *flags], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if re.search(r", 1/\d done\)$", line):  # one at a time, Tune makes each trial as it starts it: 1/2 done
            break
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped by SIGUSR1; state and checkpoint saved" in stdout, stderr[-3000:]
    assert json.loads((tmp_path / "status.json").read_text())["ending"] == "stopped"
    before = trial_rows(tmp_path / "asha")

    changed = run_script(TRAINER, "--resume", tmp_path / "asha", "--grid", "lr=[1e-3,3e-4]", env=env, timeout=60)
    assert changed.returncode == 2 and "--grid" in one_line(changed.stderr), changed.stderr
    out = run_script(TRAINER, "--resume", tmp_path / "asha", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "status.json").read_text())["ending"] == "done"  # the chain does not requeue it
    after = trial_rows(tmp_path / "asha")
    decided = json.loads((tmp_path / "asha" / "rlhpc_scheduler.json").read_text())
    stopped = {entry["trial"]: entry["iteration"] for entry in decided["stopped_early"]}
    # Ended before the signal: run to the end, or stopped by ASHA at iteration 2 (its rung: a trial checkpointed
    # there by the signal had that result judged before the stop). Not only lr=1e-7: lr=3e-4 is stopped there too
    # when it reaches the rung after lr=1e-3 with a lower return (seen on a loaded machine).
    stopped_lrs = {trial_lr(tmp_path / "asha" / name) for name, iteration in stopped.items() if iteration == 2}
    done_before = {lr for lr, rows in before.items() if len(rows) == 4 or (len(rows) == 2 and lr in stopped_lrs)}
    assert done_before and len(done_before) < 3, (before, stopped)
    assert len(after) == 3, after  # the same trials, none started again from scratch
    for lr in done_before:
        assert after[lr] == before[lr]  # a finished trial is not trained again
    for rows in after.values():
        assert rows == list(range(1, len(rows) + 1))  # each iteration once, across the resume
    iterations = {lr: len(rows) for lr, rows in after.items()}
    assert iterations[1e-7] == 2 and iterations[1e-3] == 4, iterations
    assert 2 in stopped.values() and len(stopped) == sum(1 for n in iterations.values() if n < 4)
    assert f"asha stopped {len(stopped)} of 3 trials early: " in out.stdout
    compare = run_module("rlhpc.compare", tmp_path / "asha", "--out", tmp_path / "asha.png", env=env)
    assert compare.returncode == 0, compare.stderr[-3000:]
    marked = {line.split(")")[0] for line in compare.stdout.splitlines() if "[asha stopped it at iteration 2]" in line}
    assert marked == {f"asha (lr={lr:g}" for lr, n in iterations.items() if n < 4}, compare.stdout


def trial_rows(experiment) -> dict:
    """{a trial's lr: the training_iteration of each row of its progress.csv}."""
    rows = {}
    for trial in (p for p in experiment.iterdir() if (p / "progress.csv").exists()):
        with open(trial / "progress.csv") as f:
            rows[trial_lr(trial)] = [int(row["training_iteration"]) for row in csv.DictReader(f)]
    return rows


def trial_lr(trial_dir) -> float:
    return json.loads((trial_dir / "params.json").read_text())["lr"]


def one_line(stderr: str) -> str:
    [line] = error_lines(stderr)
    return line


def test_an_optuna_search_runs_its_samples_and_says_what_mattered(tmp_path):
    """--search optuna: --num-samples trials, each with values Optuna picked within the ranges, named by them; the
    best one as an experiment file; Optuna's fANOVA table of the two keys' importance."""
    out = run_script(TRAINER, "--search", "optuna", "--loguniform", "lr=1e-4,1e-2", "--uniform", "gamma=0.9,0.999",
                     "--num-samples", 3, "--stop-iters", 2, "--num-cpus", 0, "--seed", 0, "--storage-path", tmp_path,
                     "--name", "optuna", env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    trials = [p for p in (tmp_path / "optuna").iterdir() if p.is_dir()]
    picked = [json.loads((t / "params.json").read_text()) for t in trials]
    assert len(trials) == 3 and all((t / "progress.csv").stat().st_size for t in trials)
    assert all(1e-4 <= p["lr"] <= 1e-2 and 0.9 <= p["gamma"] <= 0.999 for p in picked), picked
    assert len({p["lr"] for p in picked}) == 3
    assert all(re.search(r"_gamma=[\d.]+,lr=[\d.e-]+$", t.name) for t in trials), [t.name for t in trials]
    table = re.search(r"^parameter importance \(Optuna's fANOVA over 3 trials; the shares sum to 1\):\n"
                      r"  (\w+) +([\d.]+)\n  (\w+) +([\d.]+)$", out.stdout, re.MULTILINE)
    assert table and {table.group(1), table.group(3)} == {"lr", "gamma"}, out.stdout[-2000:]
    assert abs(float(table.group(2)) + float(table.group(4)) - 1) < 0.02
    assert (tmp_path / "optuna" / "best_trial.yaml").exists()


def test_pbt_exploit_copies_a_better_trials_weights_and_config(tmp_path):
    """Two trials, one CPU each: lr=1e-6 cannot learn, lr=1e-3 does. At a perturbation the worse one takes the
    better one's checkpoint and its lr (perturbed; with --seed 0 PBT's draw keeps 1e-3): in its own progress.csv
    the step count goes on from the other's checkpoint, the return jumps and the learner's lr is the new one. The
    exploit is in the output and in rlhpc_scheduler.json. A perturbation at every iteration: async PBT exploits
    only a trial that is still running and saved at its own last perturbation, and one trial may start iterations
    ahead of the other (on a loaded machine: 3 of 8 with an interval of 2, and no exploit happened)."""
    out = run_script(TRAINER, "--grid", "lr=[1e-6,1e-3]", "--scheduler", "pbt", "--perturbation-interval", 1,
                     "--stop-iters", 6, "--num-cpus", 0, "--seed", 0, "--storage-path", tmp_path, "--name", "pbt",
                     env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    packed = re.search(r"^(\d) trials? at a time: (\d+) CPUs / 1 per trial$", out.stdout, re.MULTILINE)
    assert packed and int(packed.group(1)) == min(2, int(packed.group(2))), out.stdout[:3000]
    decided = json.loads((tmp_path / "pbt" / "rlhpc_scheduler.json").read_text())
    exploit = next(e for e in decided["exploits"] if e["before"] == {"lr": 1e-6})
    assert exploit["after"]["lr"] != 1e-6, exploit  # the lr came with the weights (seed 0: 1e-3, not shifted left)
    rows = {}
    with open(tmp_path / "pbt" / exploit["trial"] / "progress.csv") as f:
        rows[exploit["trial"]] = {int(r["training_iteration"]): r for r in csv.DictReader(f)}
    bad, cut = rows[exploit["trial"]], exploit["from_iteration"]
    lr = "learners/default_policy/default_optimizer_learning_rate"
    before = [float(row[RETURN]) for i, row in bad.items() if i <= cut and float(row[lr]) == 1e-6]
    first_after = bad[cut + 1]  # trained from the other trial's checkpoint at iteration `cut`
    steps = int(float(first_after["num_env_steps_sampled_lifetime"])) - exploit["from_steps"]
    assert 2000 <= steps <= 2100, steps  # one batch on from the other trial's count, not from its own
    assert float(first_after[lr]) == exploit["after"]["lr"]
    assert before and float(first_after[RETURN]) > max(before) + 5, (before, first_after[RETURN])
    assert f"pbt: {len(decided['exploits'])} exploit" in out.stdout
    assert re.search(r"pbt: at iteration \d+ takes the weights of \w+ \(iteration \d+", out.stdout), out.stdout


@pytest.mark.parametrize("args, message", [
    (["--grid", "lr=0.1"], "--grid lr needs a non-empty list"),  # the other cases: unit/test_flags.py
])
def test_bad_search_spec_is_one_line(args, message, tmp_path):
    out = run_script(TRAINER, *args, env=clean_env(HOME=tmp_path))
    assert out.returncode == 2
    assert len(error_lines(out.stderr)) == 1 and message in out.stderr, out.stderr


def test_seeds_run_one_trial_each_and_compare_draws_their_band(tmp_path):
    """--seeds 3: three trials that differ only by seed; compare groups them into a mean with the seeds' range
    (too few seeds for a confidence interval: rlhpc.outputs.compare.CI_MIN_SEEDS) and
    says how many reached the stop reward, how fast. Tracked through Tune's MLflow callback: one MLflow run per
    trial, with its trial's returns (W&B through Tune: the Slurm chain test)."""
    store = tmp_path / "mlruns"
    out = run_script(TRAINER, "--seeds", 3, "--stop-reward", 30, "--stop-iters", 4, "--storage-path", tmp_path,
                     "--mlflow", store, env=clean_env(HOME=tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    trials = sorted(p for p in (tmp_path / "CartPole-v0").iterdir() if p.is_dir())
    assert sorted(json.loads((t / "params.json").read_text())["seed"] for t in trials) == [0, 1, 2]
    returns = {}
    for trial in trials:
        with open(trial / "progress.csv") as f:
            returns[trial.name] = [float(row[RETURN]) for row in csv.DictReader(f)]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file://{store}")
    runs = client.search_runs([client.get_experiment_by_name("CartPole-v0").experiment_id])
    tracked = {run.data.tags["trial_name"]: [m.value for m in client.get_metric_history(run.info.run_id, RETURN)]
               for run in runs}
    assert sorted(tracked.values()) == sorted(returns.values()) and len(tracked) == 3
    assert re.search(r"^seeds: 3 trials, final return [\d.]+ \[[\d.]+, [\d.]+\] \(range of 3 seeds\); "
                     r"their mean and band: python -m rlhpc.compare ", out.stdout, re.MULTILINE), out.stdout
    figure = tmp_path / "seeds.png"
    compare = run_module("rlhpc.compare", tmp_path / "CartPole-v0", "--out", figure, env=clean_env(HOME=tmp_path))
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert re.search(r"^CartPole-v0 \(3 seeds\): seeds \d, \d, \d; final return [\d.]+ \[[\d.]+, [\d.]+\] "
                     r"\(range of 3 seeds\); (\d) of 3 reached 30", compare.stdout, re.MULTILINE), compare.stdout
    assert "(3 runs, 1 seed group as mean and band over the x range all its seeds reached, x = training iteration)" \
        in compare.stdout
    from matplotlib.image import imread

    rgb = imread(figure)[..., :3] * 255
    mean_line = int((abs(rgb - (31, 119, 180)).sum(axis=-1) < 40).sum())
    band = int((abs(rgb - (199, 221, 236)).sum(axis=-1) < 25).sum())  # the first colour at alpha 0.25 on white
    assert mean_line > 300 and band > 2000, (mean_line, band)
