"""Pure logic, tested in this process (milliseconds, not a Python+Ray start per case): flag parsing, value
parsing, token stripping, failure lines, the results helpers, the run spec, and the trainer's one-line refusals
before Ray starts. Each error class keeps one end-to-end case in the script tests (test_trainer.py, ...)."""

import dataclasses
import json
import math
import sys

import pytest
from conftest import REPO, RETURN

from rlhpc.errors import UserError
from rlhpc.outputs.report import failure_line
from rlhpc.run import cli, results
from rlhpc.run.cli import without_token
from rlhpc.train.trainer import main


@pytest.fixture
def trainer(monkeypatch, tmp_path, capsys):
    """main() as a script runs it, here: (exit code, stdout, stderr); a user with no Ray auth configured."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "ip_head", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)

    def run(*argv, num_gpus=0.0):
        try:
            code = main([str(a) for a in argv], description="", num_gpus=num_gpus)
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--name-env", "CartPole-v9"], "unknown env 'CartPole-v9'"),
    (["--name-env", "no_such_module:MyEnv-v0"], "cannot import 'no_such_module' for env 'no_such_module:MyEnv-v0'"),
    (["--name-env", "/no/such/file.py:MyEnv"], "cannot import '/no/such/file.py' for env '/no/such/file.py:MyEnv'"),
    (["--run", "NoSuchAlgo"], "unknown algorithm 'NoSuchAlgo'"),
    (["--run", "A2C"], "A2C was removed from RLlib"),
    (["--run", "A3C"], "A3C was removed from RLlib"),
    (["--run", "BC"], "BC learns from recorded data"),
    (["--num-cpus", "1.5"], "argument --num-cpus: expected a whole number >= 0, got '1.5'"),
    (["--num-gpus", "1.5"], "more than one GPU must be a whole number"),
    (["--num-gpus", "inf"], "argument --num-gpus: expected a GPU count >= 0, got 'inf'"),
    (["--set", "lr"], "malformed --set 'lr': expected KEY=VALUE"),
    (["--set", "=3"], "malformed --set '=3'"),
    (["--set", "learning_rate=0.1"], "PPO has no config key 'learning_rate'"),
    (["--set", "model_config.fcnet_hidden=[8]"], "PPO has no config key 'model_config.fcnet_hidden'"),
    (["--set", "minibatch_size=100000"], "invalid PPO config: `minibatch_size` (100000)"),
    (["--env-config", "length"], "malformed --env-config 'length'"),
    (["--env-config", "no_such_key=1"], "bad --env-config for CartPole-v0"),
    (["--grid", "lr=[]"], "--grid lr needs a non-empty list"),
    (["--grid", "no_such_key=[1,2]"], "PPO has no config key 'no_such_key'"),
    (["--grid", 'lr=[0.1,"fast"]'], "bad value for lr: expected a number, got 'fast'"),
    (["--uniform", "lr=1e-3"], "malformed --uniform 'lr=1e-3': expected KEY=LOW,HIGH"),
    (["--loguniform", "lr=0,1"], "bad --loguniform 'lr=0,1': need LOW < HIGH and LOW > 0"),
    (["--resume"], "nothing to resume at"),
    (["--stop-on", "eval"], "--stop-on eval stops on the greedy evaluation's return: give --eval-interval N too"),
    (["--seeds", "0,0"], "argument --seeds: a seed given twice in '0,0'"),
    (["--wandb", "online"], "--wandb online needs a W&B API key on this node: export WANDB_API_KEY or run "
                            "`wandb login`; on compute nodes without internet use --wandb offline"),
    (["--wandb", "cloud"], "argument --wandb: invalid choice: 'cloud' (choose from 'offline', 'online')"),
    (["--mlflow", "/dev/null/mlruns"], "--mlflow /dev/null/mlruns: cannot create the MLflow file store there "
                                       "(Not a directory)"),
])
def test_bad_input_is_one_line_before_ray_starts(trainer, tmp_path, args, message):
    code, _, err = trainer(*args, "--stop-iters", 1)
    assert code == 2
    assert message in one_error_line(err)
    assert not list(tmp_path.glob("ray_results/*")), "a failed start left an experiment behind"


@pytest.mark.parametrize("flag, module", [("--wandb=offline", "wandb"), ("--mlflow=mlruns", "mlflow")])
def test_tracking_without_its_library_is_one_line(trainer, monkeypatch, flag, module):
    monkeypatch.setitem(sys.modules, module, None)  # as in a Python without it: its import fails
    code, _, err = trainer(flag, "--stop-iters", 1)
    assert code == 2
    assert one_error_line(err) == (f"error: {flag.split('=')[0]} needs the {module} package, which this Python "
                                   "lacks: pip install -e '.[tracking]' (or pip install wandb mlflow-skinny)")


def test_rllib_names_for_the_tutorial_flags(trainer):
    code, out, err = trainer("--env", "CartPole-v1", "--algo", "dqn", "--num-env-runners", 0, "--print-config")
    assert code == 0, err
    spec = json.loads(out)["spec"]
    assert (spec["algo"], spec["env"]["name"], spec["num_env_runners"]) == ("DQN", "CartPole-v1", 0)


@pytest.mark.parametrize("gpus, learners, per_learner, gpu_total", [
    ("0", 0, 0, 0),  # the learner on CPU, inside the algorithm process
    ("0.5", 0, 0.5, 0.5),  # the local learner on half a GPU
    ("1", 0, 1, 1),  # the local learner on one GPU
])
def test_print_config_maps_gpus_to_learners(trainer, gpus, learners, per_learner, gpu_total):
    code, out, err = trainer("--num-cpus", 2, "--num-gpus", gpus, "--print-config", num_gpus=1.0)
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert summary["num_learners"] == learners
    assert summary["num_gpus_per_learner"] == per_learner
    assert summary["resources"].get("GPU", 0) == gpu_total
    assert summary["resources"]["CPU"] == 3  # 2 env runners + the algorithm process
    assert summary["num_env_runners"] == 2 and summary["framework"] == "torch"


def test_pendulum_gets_its_own_ppo_settings_and_set_wins(trainer):
    code, out, err = trainer("--name-env", "Pendulum-v1", "--set", "lambda_=0.8", "--print-config")
    assert code == 0, err
    pendulum = json.loads(out)
    assert pendulum["config"]["gamma"] == 0.9  # the env's default, over PPO's 0.99
    assert pendulum["config"]["vf_clip_param"] == 10_000
    assert pendulum["config"]["lambda"] == 0.8  # --set beats the env's 0.95
    assert pendulum["summary"]["tuned_defaults"]["lambda_"] == 0.95  # what was applied before --set
    code, out, err = trainer("--name-env", "CartPole-v1", "--print-config")
    cartpole = json.loads(out)
    assert cartpole["config"]["gamma"] == 0.99 and cartpole["config"]["vf_clip_param"] == 10_000
    assert "gamma" not in cartpole["summary"]["tuned_defaults"]
    assert cartpole["summary"]["tuned_defaults"]["lr"] == 0.001  # PPO's own defaults still apply


def resolved(*argv, num_gpus=0.0):
    from rlhpc.run.spec import resolve

    return resolve(cli.build_parser("", num_gpus=num_gpus).parse_args([str(a) for a in argv]))


def test_the_spec_decides_every_derived_setting_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ip_head", raising=False)
    local = resolved("--stop-iters", 3)
    assert (local.name, local.address, local.max_failures, local.backend) == ("CartPole-v0", None, 0, "inprocess")
    assert dict(local.stop) == {RETURN: 195.0, "training_iteration": 3}
    assert local.experiment_dir == str(tmp_path / "ray_results" / "CartPole-v0")
    # The tutorial's --redis-password means "join the running cluster": Tune, 3 restarts, no token recorded.
    joined = resolved("--redis-password", "f" * 64, "--stop-iters", 1)
    assert (joined.address, joined.max_failures, joined.backend) == ("auto", 3, "tune")
    assert "f" * 64 not in json.dumps(joined.record())
    search = resolved("--grid", "lr=[1e-3,1e-4]", "--metric", "steps_to_reward")
    assert (search.backend, search.mode, search.search) == ("tune", "min", ((("lr",), "grid", (1e-3, 1e-4)),))
    assert resolved("--max-failures", 1).backend == "tune"
    assert resolved("--name-env", "Acrobot-v1", "--name", "x", "--local-mode", "--num-cpus", 3).num_env_runners == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        local.name = "other"


def test_parse_value_reads_literals_and_keeps_text():
    assert cli.parse_value("1e-3") == 0.001
    assert cli.parse_value("[64,64]") == [64, 64]
    assert cli.parse_value("true") is True and cli.parse_value("True") is True
    assert cli.parse_value("(1, 2)") == (1, 2)
    assert cli.parse_value("fast") == "fast"
    assert cli.parse_assignments(["a.b=1", " c = x "], "--set") == [(["a", "b"], 1), (["c"], "x")]
    with pytest.raises(UserError, match="malformed --set 'a.=1'"):
        cli.parse_assignments(["a.=1"], "--set")


@pytest.mark.parametrize("argv", [
    ["t.py", "--redis-password", "SECRET", "--stop-iters", "1"],
    ["t.py", "--redis-password=SECRET", "--stop-iters", "1"],
    ["t.py", "--redis-pass", "SECRET", "--stop-iters", "1"],
    ["t.py", "--red=SECRET", "--stop-iters", "1"],
])
def test_the_token_is_taken_out_of_argv_in_every_form_argparse_accepts(argv):
    assert without_token(argv) == ["t.py", "--stop-iters", "1"]


def test_failure_line_prefers_the_env_error_over_rllibs_bare_runtime_error():
    text = ("Traceback (most recent call last):\n  File \"env.py\", line 3, in step\n"
            "ValueError: simulator diverged at t=12\n\nThe above exception was the direct cause:\n"
            "Traceback (most recent call last):\nRuntimeError\n")
    assert failure_line(text, RuntimeError()) == "ValueError: simulator diverged at t=12"
    assert failure_line("", KeyError("x")) == "KeyError"


def test_results_helpers_read_returns_steps_and_stops():
    result = {"training_iteration": 4, "num_env_steps_sampled_lifetime": 8000,
              "env_runners": {"episode_return_mean_100": 190.5, "episode_return_mean": 300.0}}
    assert results.episode_return(result) == 190.5  # the 100-episode mean, not one iteration's
    assert results.episode_return({"env_runners": {"episode_return_mean_100": math.nan}}) is None
    assert results.env_steps(result) == 8000
    assert results.env_steps({"env_runners": {"num_env_steps_sampled_lifetime": 7}}) == 7  # legacy stack
    stop = {RETURN: 195.0, "training_iteration": 5}
    assert results.target_reward(stop) == 195.0 and not results.reached(result, stop)
    assert not results.stop_reached(result, stop)
    assert results.stop_reached({**result, "training_iteration": 5}, stop)
    assert results.as_number(True) is None and results.as_number(3) == 3
    assert results.flatten({"a": {"b": 1, "c": {}}, "d": 2}) == {"a/b": 1, "d": 2}


SLOW_CARTPOLE = "custom_gym_env/custom_env.py:SlowCartPole"


def printed(trainer, *argv):
    code, out, err = trainer(*argv, "--print-config")
    assert code == 0, err
    return json.loads(out)


def test_auto_vectorize_steps_a_slow_env_in_parallel_and_cartpole_in_turn(trainer, monkeypatch):
    monkeypatch.chdir(REPO)
    slow = printed(trainer, "--name-env", SLOW_CARTPOLE, "--env-config", "step_ms=5")
    assert slow["spec"]["vectorize"] == "async" and slow["config"]["gym_env_vectorize_mode"] == "async"
    assert slow["summary"]["vectorize"].startswith("async (a step takes 5.")
    cartpole = printed(trainer, "--name-env", "CartPole-v1")
    assert cartpole["spec"]["vectorize"] == "sync" and cartpole["config"]["gym_env_vectorize_mode"] == "sync"
    # Said by the flag, or by --set (which always wins), the choice is not timed.
    assert printed(trainer, "--vectorize", "async")["config"]["gym_env_vectorize_mode"] == "async"
    forced = printed(trainer, "--name-env", SLOW_CARTPOLE, "--env-config", "step_ms=5", "--vectorize", "auto",
                     "--set", "gym_env_vectorize_mode=sync")
    assert forced["config"]["gym_env_vectorize_mode"] == "sync"
    assert printed(trainer, "--num-envs-per-runner", 1, "--name-env", SLOW_CARTPOLE, "--env-config",
                   "step_ms=5")["spec"]["vectorize"] == "sync"  # one env: nothing to step in parallel


def test_the_train_batch_keeps_32_steps_from_every_sampling_env(trainer):
    default = printed(trainer)["summary"]  # 0 runners x 8 envs: PPO's tuned 2,000 (250 steps per env)
    assert (default["train_batch_size_per_learner"], default["rollout_fragment_length"]) == (2000, 250)
    many = printed(trainer, "--num-cpus", 35)["summary"]  # 35 x 8 = 280 envs: 280 x 32, not 7 steps each
    assert (many["train_batch_size_per_learner"], many["rollout_fragment_length"]) == (8960, 32)
    assert printed(trainer, "--num-cpus", 35, "--set", "train_batch_size_per_learner=4000")["summary"][
        "train_batch_size_per_learner"] == 4000  # --set wins


@pytest.mark.parametrize("args, message", [
    (["--vectorize", "fast"], "argument --vectorize: invalid choice: 'fast'"),
    (["--name-env", SLOW_CARTPOLE, "--env-config", "step_ms=-1"],
     "bad --env-config for custom_gym_env/custom_env.py:SlowCartPole: SlowCartPole: step_ms must be a number"),
    (["--name-env", SLOW_CARTPOLE, "--env-config", "max_steps=0.5"], "max_steps must be a whole number >= 1"),
    (["--name-env", SLOW_CARTPOLE, "--env-config", "step=1"], "unknown env_config key 'step'"),
])
def test_bad_values_for_the_slow_env_and_vectorize_are_one_line(trainer, monkeypatch, args, message):
    monkeypatch.chdir(REPO)
    code, _, err = trainer(*args, "--stop-iters", 1)
    assert code == 2
    assert message in one_error_line(err)


def test_this_iterations_time_is_recovered_from_rllibs_moving_average():
    from rlhpc.algo.metrics import RLLIB_EMA_COEFF, this_iteration

    seconds, average, previous = [5.0, 1.0, 1.0, 3.0], None, None
    for value in seconds:  # what RLlib's EmaStats reports after each iteration (the first value as it is)
        average = value if average is None else (1 - RLLIB_EMA_COEFF) * average + RLLIB_EMA_COEFF * value
        assert this_iteration(average, previous, 1) == pytest.approx(value, rel=1e-9)
        previous = average
    # Several training steps in an iteration (DQN): their sum, exact when they took equal time.
    after_three = previous
    for _ in range(3):
        after_three = (1 - RLLIB_EMA_COEFF) * after_three + RLLIB_EMA_COEFF * 0.5
    assert this_iteration(after_three, previous, 3) == pytest.approx(1.5, rel=1e-9)


# --- runs side by side, and what --resume continues (rlhpc.run.experiment, rlhpc.run.resume) ----------------------

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


def test_resume_refuses_changes_to_what_the_run_trains_and_names_them(trainer, tmp_path):
    run = recorded_run(tmp_path / "r" / "run", ["--set", "lr=5e-4", "--stop-iters", "20", "--num-cpus", "2"])
    code, _, err = trainer("--storage-path", tmp_path / "r", "--name", "run", "--resume", "--set", "lr=1e-3",
                           "--stop-iters", "20", "--set", "gamma=0.99")
    assert code == 2
    assert one_error_line(err) == (
        f"error: --resume would change what {run} trains: --set lr 0.0005 -> 0.001, --set gamma (unset) -> 0.99 "
        f"(its settings: {run}/rlhpc_run_spec.json; add --allow-changes to resume with them, and the run "
        "records what changed)")
    code, _, err = trainer("--resume", run, "--stop-reward", 100)
    assert "--stop-reward (unset) -> 100.0 (its settings" in one_error_line(err)


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


@pytest.mark.parametrize("metrics, error, stopped_by, ending", [
    ({"training_iteration": 5}, None, None, "done"),  # --stop-iters 5 met
    ({"training_iteration": 3}, None, "SIGUSR1", "stopped"),
    ({"training_iteration": 5}, None, "SIGUSR1", "done"),  # the signal came in the last iteration
    ({"training_iteration": 3}, "training failed: ...", None, "failed"),
])
def test_how_a_run_ended_for_the_job_that_requeues_it(metrics, error, stopped_by, ending):
    from rlhpc.outputs.report import Outcome, TrialOutcome
    from rlhpc.outputs.report import ending as how

    spec = type("Spec", (), {"stop": {"training_iteration": 5}})()
    outcome = Outcome("/x", [TrialOutcome(path="/x/t", metrics=metrics, checkpoint=None, error=error)], stopped_by)
    assert how(outcome, spec) == ending


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


# --- the preflight (rlhpc.slurm.doctor): the node checks here; on the Slurm test cluster in test_slurm.py -----------

def test_the_preflight_names_a_node_whose_environment_differs_from_the_heads():
    from rlhpc.slurm import doctor

    head = {"node": "n1", "versions": {"python": "3.11.7", "gymnasium": "1.2.2"}, "facts": {}, "problems": []}
    other = {"node": "n2", "versions": {"python": "3.11.7", "gymnasium": "0.29.1"}, "facts": {}, "problems": []}
    doctor.compare([head, other])
    lines, failures = doctor.report_lines([head, other])
    assert failures == 1 and lines[0].startswith("node n1: ok (")
    assert lines[2] == ("node n2: FAIL gymnasium 0.29.1 here, 1.2.2 on n1 (the head): use one Python environment "
                        "on every node (e.g. RLHPC_VENV=/path/to/.venv)")


def test_the_preflight_outside_slurm_checks_this_machine(monkeypatch, tmp_path, capsys):
    from rlhpc.slurm import doctor

    for key in ("SLURM_JOB_ID", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RLHPC_RAY_TMP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RLHPC_OBJECT_STORE_MEMORY", str(1 << 20))  # this machine's /dev/shm is not the question
    assert doctor.main(["--storage-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("doctor: 1 node(s), 0 failure(s)")
    token = tmp_path / "token"
    token.write_text("secret")
    token.chmod(0o640)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert doctor.main(["--storage-path", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL the token file {token} has mode 640: other users can read it; chmod 600 {token}" in out


# --- multi-agent envs (rlhpc.envs.multi_agent): the refusals before Ray starts; training in test_multi_agent.py -----
RENDEZVOUS = "custom_gym_env/multi_agent_env.py:RendezvousEnv"
UNEVEN_AGENTS = '''
import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv


class Uneven(MultiAgentEnv):
    """Two agents that see different things: a shared policy cannot serve both."""

    def __init__(self, config=None):
        super().__init__()
        self.agents = self.possible_agents = ["small", "big"]
        self.observation_spaces = {"small": gym.spaces.Box(0, 1, (2,), np.float32),
                                   "big": gym.spaces.Box(0, 1, (3,), np.float32)}
        self.action_spaces = {agent: gym.spaces.Discrete(2) for agent in self.agents}

    def reset(self, *, seed=None, options=None):
        return {a: self.observation_spaces[a].sample() for a in self.agents}, {}

    def step(self, actions):
        obs = {a: self.observation_spaces[a].sample() for a in self.agents}
        return obs, dict.fromkeys(self.agents, 1.0), {"__all__": True}, {"__all__": False}, {}
'''
MAPPINGS = '''
POLICIES = ["left", "right"]


def by_side(agent_id, episode=None, **kwargs):
    return "left" if agent_id == "agent_0" else "middle"


def sides(agent_id, episode=None, **kwargs):
    return "left" if agent_id == "agent_0" else "right"
'''


@pytest.mark.parametrize("args, message", [
    (["--name-env", "uneven.py:Uneven"], "error: --policies shared: agents small and big of uneven.py:Uneven share "
     "policy 'shared' but their spaces differ (Box(0.0, 1.0, (2,), float32) -> Discrete(2) vs Box(0.0, 1.0, (3,), "
     "float32) -> Discrete(2)): give --policies per-agent or a mapping module:function"),
    (["--name-env", RENDEZVOUS, "--policies", "mappings.py:by_side"], "error: --policies mappings.py:by_side: "
     "by_side('agent_1') names the unknown policy 'middle' (POLICIES in mappings.py: left, right)"),
    (["--name-env", RENDEZVOUS, "--policies", "no_such_module:policy_of"],
     "error: --policies no_such_module:policy_of: cannot import 'no_such_module': No module named 'no_such_module'"),
    (["--name-env", RENDEZVOUS, "--policies", "mappings.py:nothing"],
     "error: --policies mappings.py:nothing: mappings.py has no function 'nothing'"),
    (["--name-env", RENDEZVOUS, "--policies", "each"], "error: --policies each: give shared, per-agent or "
     "module:function"),
    (["--policies", "per-agent"], "error: --policies is for multi-agent envs (RLlib MultiAgentEnv); CartPole-v0 "
     "has one agent"),
    (["--name-env", RENDEZVOUS, "--vectorize", "async"], "is a multi-agent env, whose sub-envs RLlib 2.60 steps "
     "only one after another: drop --vectorize async"),
])
def test_multi_agent_bad_input_is_one_line_before_ray_starts(trainer, tmp_path, monkeypatch, args, message):
    (tmp_path / "uneven.py").write_text(UNEVEN_AGENTS)
    (tmp_path / "mappings.py").write_text(MAPPINGS)
    monkeypatch.chdir(tmp_path)
    args = [REPO / a if a == RENDEZVOUS else a for a in args]
    code, _, err = trainer(*args, "--stop-iters", 1)
    assert code == 2
    assert message.replace(RENDEZVOUS, str(REPO / RENDEZVOUS)) in one_error_line(err)
    assert not list(tmp_path.glob("ray_results/*"))


def test_policies_are_resolved_per_agent_or_by_a_mapping_function(trainer, tmp_path, monkeypatch):
    (tmp_path / "uneven.py").write_text(UNEVEN_AGENTS)
    (tmp_path / "mappings.py").write_text(MAPPINGS)
    monkeypatch.chdir(tmp_path)
    for args, mapping, why in [
        (["--name-env", "uneven.py:Uneven", "--policies", "per-agent"], {"small": "small", "big": "big"},
         "2 policies for 2 agents (per-agent)"),
        (["--name-env", REPO / RENDEZVOUS, "--policies", "mappings.py:sides"], {"agent_0": "left", "agent_1": "right"},
         "2 policies for 2 agents (mappings.py:sides)"),
        (["--name-env", REPO / RENDEZVOUS], {"agent_0": "shared", "agent_1": "shared"},
         "one shared policy for 2 agents"),
    ]:
        code, out, err = trainer(*args, "--print-config")
        assert code == 0, err
        printed = json.loads(out)
        assert printed["summary"]["policies"] == {"agent_policy": mapping, "why": why}
        assert sorted(printed["config"]["policies"]) == sorted(set(mapping.values()))
        assert printed["spec"]["agent_policy"] == mapping
        assert printed["summary"]["vectorize"].startswith("sync")


# --- experiment files (rlhpc.run.config_file): read into flags before the command line's ------------------------------
@pytest.mark.parametrize("text, message", [
    ("name_env: CartPole-v1\nlrr: 3\n", "error: --config-file exp.yaml: unknown key 'lrr'; keys are the "
     "trainer's flags (see --help) and set: / env_config: for config overrides"),
    ("set:\n  learning_rate: 0.1\n", "error: PPO has no config key 'learning_rate'"),
    ("name_env: [CartPole-v1\n", "error: --config-file exp.yaml: not valid YAML (line 2, column 1): expected ',' or "
     "']', but got '<stream end>'"),
    ("- num_cpus: 2\n", "error: --config-file exp.yaml: expected KEY: VALUE lines (a mapping), got a list"),
    ("num_cpus: two\n", "error: argument --num-cpus: expected a whole number >= 0, got 'two'"),
    ("as_test: maybe\n", "error: --config-file exp.yaml: as_test takes true or false, got 'maybe'"),
    ("CartPole-v1: {stop_reward: 450}\nAcrobot-v1: {stop_reward: -100}\n", "error: --config-file exp.yaml holds "
     "entries for CartPole-v1, Acrobot-v1: pick one with --name-env"),
])
def test_experiment_file_errors_are_one_line(trainer, tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(text)
    code, _, err = trainer("--config-file", "exp.yaml", "--stop-iters", 1)
    assert code == 2
    assert one_error_line(err).startswith(message), err


def test_an_experiment_files_settings_reach_the_config_and_flags_win(trainer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("name-env: CartPole-v1\nnum_envs_per_runner: 4\nstop_iters: 50\nas_test: true\n"
                                       "set:\n  lr: 0.0005\n  model_config.fcnet_hiddens: [32, 32]\n")
    code, out, err = trainer("--config-file", "exp.yaml", "--stop-iters", 3, "--set", "lr=0.002", "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["config"]["lr"] == 0.002 and printed["config"]["num_envs_per_env_runner"] == 4  # flag, file
    assert printed["config"]["_model_config"]["fcnet_hiddens"] == [32, 32]
    assert printed["spec"]["stop"]["training_iteration"] == 3 and printed["spec"]["as_test"] is True
    assert printed["spec"]["flags"][:2] == ["--name-env", "CartPole-v1"]  # what --resume parses again


@pytest.mark.parametrize("env", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1",
                                 "custom_gym_env/custom_env.py:SlowCartPole"])
def test_the_shipped_experiment_files_entries_resolve(trainer, monkeypatch, env):
    monkeypatch.chdir(REPO)
    code, out, err = trainer("--config-file", "experiments/ppo.yaml", "--name-env", env, "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["spec"]["config_file"]["entry"] == env and printed["spec"]["env"]["name"] == env


def test_evaluation_during_training_is_configured_and_can_be_the_stop(trainer):
    code, out, err = trainer("--eval-interval", 5, "--eval-episodes", 3, "--stop-on", "eval", "--print-config")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["config"]["evaluation_interval"] == 5 and printed["config"]["evaluation_duration"] == 3
    assert printed["config"]["evaluation_config"] == {"explore": False}
    assert printed["spec"]["stop"] == {"evaluation_return": 195.0}
    assert results.reached({"evaluation_return": 196.0}, printed["spec"]["stop"])
    assert not results.reached({"evaluation_return": float("nan"), "env_runners": {"episode_return_mean_100": 200}},
                               printed["spec"]["stop"])
