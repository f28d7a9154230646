"""The typed records and their JSON form (rlhpc.run.records, rlhpc.slurm.findings): each goes to its file and back
unchanged, and records written before the classes existed (or by hand) still read."""

import json

from rlhpc.run import experiment
from rlhpc.run.records import Change, ConfigFile, ResumeEntry, RunRecord
from rlhpc.slurm.findings import FAIL, WARN, Finding, NodeReport


def spec_record(**more) -> dict:
    """Some of what RunSpec.record() writes (flat): the record keeps whatever the spec wrote."""
    return {"algo": "PPO", "env": {"name": "CartPole-v1", "kind": "gymnasium"}, "stop": {"training_iteration": 5},
            "agent_policy": {}, "train_batch_size": 2000, "storage_path": "/results", "flags": ["--stop-iters", "5"],
            "changes": [], "config_file": None, **more}


def test_a_run_record_goes_to_its_file_and_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    experiment.record_run(spec_record(), str(tmp_path), name_asked="exp")
    written = json.loads((tmp_path / experiment.RUN_SPEC_FILE).read_text())
    assert list(written) == [*spec_record(), "name_asked", "started", "slurm_job", "resumes"]  # the file's keys
    assert (written["name_asked"], written["slurm_job"], written["resumes"]) == ("exp", "77", [])

    record = experiment.read_record(tmp_path)
    assert (record.algo, record.stop, record.train_batch_size, record.flags) == \
        ("PPO", {"training_iteration": 5}, 2000, ("--stop-iters", "5"))
    assert record.env == {"name": "CartPole-v1", "kind": "gymnasium"} and record.config_file is None
    assert RunRecord.from_json(record.to_json()) == record
    assert record.to_json() == written


def test_a_resume_adds_one_entry_with_its_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    experiment.record_run(spec_record(), str(tmp_path), name_asked="exp")
    changes = (Change("--num-cpus", 2, 1, trains=False), Change("--set lr", 5e-4, 1e-3, trains=True))
    experiment.record_resume(str(tmp_path), 7, ("--resume", "--num-cpus", "1"), changes)

    written = json.loads((tmp_path / experiment.RUN_SPEC_FILE).read_text())
    [entry] = written["resumes"]
    assert list(entry) == ["at", "slurm_job", "from_iteration", "flags", "changes"]
    assert (entry["from_iteration"], entry["flags"]) == (7, ["--resume", "--num-cpus", "1"])
    assert entry["changes"] == [{"flag": "--num-cpus", "from": 2, "to": 1, "trains": False},
                                {"flag": "--set lr", "from": 5e-4, "to": 1e-3, "trains": True}]
    [resume] = experiment.read_record(tmp_path).resumes
    assert resume.changes == changes and resume.from_iteration == 7
    assert ResumeEntry.from_json(resume.to_json()) == resume


def test_a_change_reads_back_and_lists_as_the_refusal_shows_it():
    change = Change("--set model_config.fcnet_hiddens", [64, 64], None, trains=True)
    assert Change.from_json(change.to_json()) == change
    assert change.to_json() == {"flag": "--set model_config.fcnet_hiddens", "from": [64, 64], "to": None,
                                "trains": True}
    assert change.shown() == "--set model_config.fcnet_hiddens [64, 64] -> (unset)"


def test_an_experiment_file_reads_back_from_the_spec_it_is_part_of():
    config_file = ConfigFile(path="/exp/ppo.yaml", entry="CartPole-v1", text="CartPole-v1: {stop_iters: 3}\n")
    assert ConfigFile.from_json(config_file.to_json()) == config_file
    record = RunRecord.from_json({**spec_record(config_file=config_file.to_json()), "resumes": []})
    assert record.config_file == config_file


def test_records_from_before_and_by_hand_read_and_keep_their_keys(tmp_path):
    """A record without name_asked (runs from before names were claimed) and a resume entry with only flags (as the
    tests write them): both read, and writing the record back adds no key it lacked."""
    old = {"flags": ["--stop-iters", "20"], "slurm_job": "41_0", "started": "2026-12-01 10:00:00",
           "resumes": [{"flags": ["--resume", "x", "--num-cpus", "1"]}]}
    (tmp_path / experiment.RUN_SPEC_FILE).write_text(json.dumps(old))
    record = experiment.read_record(tmp_path)
    assert record.name_asked is None and record.slurm_jobs() == {"41_0", None}
    assert record.resumes[0].flags == ("--resume", "x", "--num-cpus", "1") and record.resumes[0].changes == ()
    assert set(record.to_json()) == set(old)
    assert experiment.runs_named(str(tmp_path.parent), tmp_path.name) == [str(tmp_path)]  # asked for, by default


def test_no_record_and_a_record_being_written_read_as_none(tmp_path):
    assert experiment.read_record(tmp_path) is None
    (tmp_path / experiment.RUN_SPEC_FILE).write_text("")  # claimed, not written yet
    assert experiment.read_record(tmp_path) is None
    assert experiment.read_run_record(tmp_path / "trial").stop == {}  # a trial of a run without a record


def test_a_nodes_report_goes_to_json_and_back():
    report = NodeReport(node="n3", versions={"ray": "2.60.0"}, facts={"cpus": 8, "address": "10.0.0.3"},
                        problems=[Finding(WARN, "open files limit is 1024"), Finding(FAIL, "/dev/shm is 64 MiB")])
    data = json.loads(json.dumps(report.to_json()))  # as the node's srun step prints it
    assert data["problems"] == [["WARN", "open files limit is 1024"], ["FAIL", "/dev/shm is 64 MiB"]]
    assert NodeReport.from_json(data) == report
    assert report.worst == FAIL and NodeReport(node="n1").worst == "ok"
    assert NodeReport(node="n1", problems=[Finding(WARN, "slow")]).worst == WARN


# What RunSpec.record() has always written, in this order: --print-config's "spec" and every run record (the env
# guard's limit since issue 26; the env's family and its observation normalizer since issue 28; --search and
# --max-concurrent since issue 29; --scale-rewards since issue 28's last round).
RECORDED_SPEC_KEYS = [
    "algo", "env", "env_config", "framework", "address", "local_mode", "num_env_runners", "num_envs_per_runner",
    "vectorize", "vectorize_reason", "train_batch_size", "num_gpus", "num_learners", "num_gpus_per_learner",
    "runner_resource", "learner_resource", "flatten_observations", "env_timeout_s", "env_timeout_reason",
    "agent_policy", "policies_reason", "seed", "overrides", "search", "num_samples", "metric", "mode", "scheduler",
    "eval_interval", "eval_episodes", "stop", "as_test",
    "max_failures", "checkpoint_freq", "wandb", "mlflow", "name", "storage_path", "experiment_dir", "resume_dir",
    "changes", "backend", "print_config", "command_line", "flags", "config_file", "family", "normalize_observations",
    "searcher", "max_concurrent", "anneal_lr_until", "scale_rewards"]


def test_the_spec_made_of_parts_records_flat_with_the_keys_runs_always_had(monkeypatch, tmp_path):
    from rlhpc.run import cli
    from rlhpc.run.spec import resolve

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ip_head", raising=False)
    flags = ["--stop-iters", "3", "--set", "lr=1e-3", "--grid", "gamma=[0.9,0.99]"]
    spec = resolve(cli.build_parser("").parse_args(flags), flags=flags)
    record = spec.record()
    assert list(record) == RECORDED_SPEC_KEYS
    assert (record["overrides"], record["search"], record["stop"]["training_iteration"]) == \
        ([["lr", 0.001]], [["gamma", "grid", [0.9, 0.99]]], 3)
    assert (record["num_env_runners"], record["name"], record["flags"]) == \
        (spec.placement.num_env_runners, spec.output.name, flags)
    json.dumps(record)  # JSON as it is
