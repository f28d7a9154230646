"""Runs side by side, and what --resume continues (rlhpc.run.experiment, rlhpc.run.resume), on experiment dirs
written here as a local run leaves them."""

import json

import pytest
from conftest import one_error_line

from rlhpc.errors import UserError
from rlhpc.run import cli


def recorded_run(path, flags, slurm_job=None):
    """An experiment dir as a local run leaves it: its record (the flags it started with) and its state."""
    path.mkdir(parents=True)
    (path / "rlhpc_run_spec.json").write_text(json.dumps({"flags": flags, "slurm_job": slurm_job,
                                                         "started": "2026-12-01 10:00:00", "resumes": []}))
    (path / "rlhpc_run.json").write_text(json.dumps({"trial": "t", "stop": {}, "checkpoints": []}))
    return path


def test_runs_started_together_with_one_name_each_claim_their_own_dir(tmp_path):
    import subprocess
    import sys

    from rlhpc.run import experiment

    claim = f"from rlhpc.run import experiment; print(experiment.claim({str(tmp_path)!r}, 'same')[0])"
    runs = [subprocess.Popen([sys.executable, "-c", claim], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    assert sorted(run.communicate(timeout=60)[0].strip() for run in runs) == ["same", "same_2", "same_3", "same_4"]
    # a later run with the name does not reuse a finished one's dir
    assert experiment.claim(str(tmp_path), "same")[0] == "same_5"


def test_runs_started_together_on_one_storage_path_all_find_it_writable(tmp_path):
    """Each run checks that it can write to --storage-path before Ray starts; runs started together (a job array,
    two runs from one shell) check the same folder at the same moment. A check file of one fixed name failed one
    of two trainers started side by side (`cannot write results to ...: No such file or directory`: the other had
    removed it)."""
    import subprocess
    import sys

    check = (f"from rlhpc.run import experiment\nfor _ in range(300): experiment.check_writable({str(tmp_path)!r})")
    runs = [subprocess.Popen([sys.executable, "-c", check], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [run.communicate(timeout=60)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], errors
    assert list(tmp_path.iterdir()) == []  # and it leaves nothing behind


def test_resume_refuses_changes_to_what_the_run_trains_and_names_them(trainer, tmp_path):
    run = recorded_run(tmp_path / "r" / "run", ["--set", "lr=5e-4", "--stop-iters", "20", "--num-cpus", "2"])
    code, _, err = trainer("--storage-path", tmp_path / "r", "--name", "run", "--resume", "--set", "lr=1e-3",
                           "--stop-iters", "20", "--set", "gamma=0.99")
    assert code == 2
    assert one_error_line(err) == (
        f"error: --resume would change what {run} trains: --set lr 0.0005 -> 0.001, --set gamma (unset) -> 0.99 "
        f"(its settings: {run}/rlhpc_run_spec.json; add --allow-changes to resume with them, and the run "
        "records what changed)")
    # How long it trains is not what it trains: train longer (or to a reward) without --allow-changes, recorded.
    code, out, err = trainer("--resume", run, "--stop-reward", 100, "--stop-iters", 30, "--print-config")
    assert code == 0, err
    spec = json.loads(out)["spec"]
    assert spec["stop"] == {"env_runners/episode_return_mean_100": 100.0, "training_iteration": 30}
    assert spec["changes"] == [{"flag": "--stop-reward", "from": None, "to": 100.0, "trains": False},
                               {"flag": "--stop-iters", "from": 20, "to": 30, "trains": False}]


def test_resume_takes_the_runs_own_flags_and_lets_placement_change(trainer, tmp_path):
    run = recorded_run(tmp_path / "run", ["--set", "lr=5e-4", "--stop-iters", "20", "--num-cpus", "2",
                                          "--name-env", "CartPole-v1", "--checkpoint-freq", "3"])
    code, out, err = trainer("--resume", run, "--num-cpus", 1, "--set", "lr=0.0005", "--print-config")
    assert code == 0, err
    described = json.loads(out)
    spec = described["spec"]
    assert (spec["env"]["name"], spec["num_env_runners"], spec["checkpoint_freq"]) == ("CartPole-v1", 1, 3)
    assert spec["stop"] == {"env_runners/episode_return_mean_100": 475.0, "training_iteration": 20}
    assert described["config"]["lr"] == 0.0005
    assert spec["changes"] == [{"flag": "--num-cpus", "from": 2, "to": 1, "trains": False}]


def test_a_run_from_before_anneal_lr_resumes_at_its_constant_lr(trainer, tmp_path):
    flags = ["--name-env", "MountainCarContinuous-v0", "--stop-timesteps", "50000"]  # annealed, if started now
    code, out, err = trainer("--resume", recorded_run(tmp_path / "run", flags), "--print-config")
    assert code == 0, err
    assert json.loads(out)["config"]["lr"] == 3e-4  # its record has no anneal_lr_until: it trained without


def test_resume_by_a_shared_name_picks_this_jobs_run_or_lists_them(trainer, tmp_path, monkeypatch):
    from rlhpc.run import resume

    for name, job in (("x", "41_0"), ("x_2", "41_1"), ("x_10", None)):
        recorded_run(tmp_path / name, [], slurm_job=job)
    (tmp_path / "x_3").mkdir()  # not a run: nothing of it
    (tmp_path / "xy").mkdir()  # another name
    args = cli.build_parser("").parse_args(["--storage-path", str(tmp_path), "--name", "x", "--resume"])
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert resume.find_run(args, "CartPole-v0") == str(tmp_path / "x_2")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    with pytest.raises(UserError) as e:
        resume.find_run(args, "CartPole-v0")
    assert str(e.value) == (f"--resume: 3 runs are named x: {tmp_path}/x (started 2026-12-01 10:00:00, Slurm job "
                            f"41_0, iteration 0); {tmp_path}/x_2 (started 2026-12-01 10:00:00, Slurm job 41_1, "
                            f"iteration 0); {tmp_path}/x_10 (started 2026-12-01 10:00:00, iteration 0). "
                            "Pick one with --resume DIR")


def test_a_change_allowed_once_stays_the_runs_setting(trainer, tmp_path):
    run = recorded_run(tmp_path / "run", ["--set", "lr=5e-4", "--stop-iters", "20"])
    record = json.loads((run / "rlhpc_run_spec.json").read_text())
    record["resumes"] = [{"flags": ["--resume", str(run), "--set", "lr=1e-3", "--allow-changes", "--num-cpus", "1"]}]
    (run / "rlhpc_run_spec.json").write_text(json.dumps(record))
    code, out, err = trainer("--resume", run, "--set", "num_env_runners=2", "--print-config")
    assert code == 0, err
    described = json.loads(out)
    assert described["config"]["lr"] == 0.001  # the earlier resume's, not the first start's
    assert described["spec"]["changes"] == [{"flag": "--set num_env_runners", "from": None, "to": 2,
                                             "trains": False}]  # where it runs, through --set: allowed


def test_recorded_flags_this_version_cannot_read_are_one_line(trainer, tmp_path):
    run = recorded_run(tmp_path / "run", ["--no-such-flag"])
    code, _, err = trainer("--resume", run)
    assert code == 2
    assert one_error_line(err) == (f"error: cannot read the flags recorded in {run}/rlhpc_run_spec.json: "
                                   "unrecognized arguments: --no-such-flag")


def test_runs_of_a_name_are_those_claimed_for_it(tmp_path):
    from rlhpc.run import experiment

    assert [experiment.claim(str(tmp_path), n)[0] for n in ("exp", "exp", "exp_1")] == ["exp", "exp_2", "exp_1"]
    for path, asked in (("exp", "exp"), ("exp_2", "exp"), ("exp_1", "exp_1")):
        experiment.record_run({"flags": []}, str(tmp_path / path), name_asked=asked)
    assert experiment.runs_named(str(tmp_path), "exp") == [str(tmp_path / "exp"), str(tmp_path / "exp_2")]


@pytest.mark.parametrize("after, kept", [(4, [1, 2, 3, 4]), (2, [1, 2]), (0, [])])
def test_a_trial_going_on_from_a_checkpoint_drops_the_rows_after_it(tmp_path, after, kept):
    """Rows written after the checkpoint come again (a crash past it, a resume with none): dropped, so the
    iterations in progress.csv and result.json stay strictly increasing."""
    import csv

    from rlhpc.train.trial_files import TrialFiles

    files = TrialFiles(str(tmp_path), {"lr": 1})
    for i in (1, 2, 3, 4, 5):
        files.write({"training_iteration": i, "env_runners": {"episode_return_mean": i * 10.0}})
    files.close()
    files = TrialFiles(str(tmp_path), {"lr": 2}, after_iteration=after)
    files.write({"training_iteration": after + 1, "env_runners": {"episode_return_mean": 0.0}})
    files.close()
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["training_iteration"]) for r in rows] == [*kept, after + 1]
    assert "env_runners/episode_return_mean" in rows[0]  # the header stays, or comes again
    results = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in results] == [*kept, after + 1]
    assert json.loads((tmp_path / "params.json").read_text()) == {"lr": 1}  # the config the trial started with


def test_print_config_names_the_dir_the_run_would_claim_and_creates_nothing(trainer, tmp_path):
    recorded_run(tmp_path / "r" / "Acrobot-v1", ["--name-env", "Acrobot-v1"])
    code, out, err = trainer("--name-env", "Acrobot-v1", "--storage-path", tmp_path / "r", "--print-config")
    assert code == 0, err
    spec = json.loads(out)["spec"]
    assert (spec["name"], spec["experiment_dir"]) == ("Acrobot-v1_2", str(tmp_path / "r" / "Acrobot-v1_2"))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["Acrobot-v1"]
