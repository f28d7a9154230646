"""The trainer's flags, in this process (milliseconds, not a Python+Ray start per case): one-line refusals before
Ray starts, value parsing, token stripping, and what --print-config shows they resolve to (the run spec, the RLlib
config). Each error class keeps one end-to-end case in the script tests (test_trainer.py, ...)."""

import dataclasses
import json
import sys

import pytest
from conftest import REPO, RETURN, one_error_line

from rlhpc.errors import UserError
from rlhpc.run import cli, results
from rlhpc.run.cli import without_token


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
    (["--env-timeout", "-1"], "argument --env-timeout: expected seconds >= 0, got '-1'"),
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
    (["--scheduler", "asha"], "--scheduler asha stops the worse trials of a search: give --grid, --uniform or "
                              "--loguniform with --num-samples N, for 2 trials or more"),
    (["--scheduler", "asha", "--seeds", "3"], "--scheduler asha with --seeds would stop the unlucky seeds"),
    (["--scheduler", "median"], "argument --scheduler: invalid choice: 'median' (choose from 'asha', 'hyperband', "
                                "'pbt', 'pb2')"),
    (["--scheduler", "hyperband", "--grid", "lr=[1e-3]"], "--scheduler hyperband stops the worse trials of a search"),
    (["--scheduler", "pb2", "--grid", "lr=[1e-3,1e-4]"], "--scheduler pb2 picks new values within ranges: give lr as "
                                                         "--uniform KEY=LOW,HIGH or --loguniform"),
    (["--search", "optuna"], "--search optuna picks values for the keys of --uniform, --loguniform or --grid: give "
                             "at least one"),
    (["--search", "optuna", "--seeds", "3"], "--search optuna with --seeds: search first"),
    (["--search", "bayesopt", "--grid", "lr=[1e-3,1e-4]"], "--search bayesopt searches ranges: give lr as --uniform"),
    (["--search", "optuna", "--scheduler", "pbt", "--loguniform", "lr=1e-5,1e-3", "--num-samples", "2"],
     "--search optuna with --scheduler pbt: pbt picks the trials' new values itself"),
    (["--search", "optuna", "--loguniform", "lr=1e-5,1e-3", "--metric", "time_to_reward"],
     "--search optuna learns from each trial's last result, and --metric time_to_reward is known only once the "
     "search is done"),
    (["--max-concurrent", "0"], "argument --max-concurrent: expected a whole number >= 1, got '0'"),
    (["--scheduler", "pbt"], "--scheduler pbt trains a population in which the worse trials take the better ones' "
                             "weights: give --grid, --uniform or --loguniform with --num-samples N, for 2 trials or "
                             "more"),
    (["--scheduler", "pbt", "--seeds", "3"], "--scheduler pbt with --seeds would copy the lucky seeds' weights into "
                                             "the others"),
    (["--scheduler", "pbt", "--num-samples", "2"], "--scheduler pbt mutates the keys of --grid, --uniform and "
                                                   "--loguniform: give at least one"),
    (["--scheduler", "pbt", "--grid", "lr=[1e-3,1e-4]", "--perturbation-interval", "0"],
     "argument --perturbation-interval: expected a whole number >= 1, got '0'"),
    (["--scheduler", "pbt", "--grid", "lr=[1e-3,1e-4]", "--perturbation-interval", "1"],  # and --stop-iters 1
     "--perturbation-interval 1 with --stop-iters 1: the trials stop before their first exploit"),
    (["--scheduler", "pbt", "--grid", "model_config.fcnet_hiddens=[[32],[64]]"],
     "--scheduler pbt copies weights between trials, so it cannot search model_config.fcnet_hiddens"),
    (["--scheduler", "pbt", "--grid", "lr=[1e-3,1e-4]", "--metric", "steps_to_reward"],
     "--scheduler pbt ranks the trials at every perturbation, and --metric steps_to_reward is known only once a "
     "trial is done"),
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
    assert (local.output.name, local.placement.address, local.placement.max_failures, local.backend) == \
        ("CartPole-v0", None, 0, "inprocess")
    assert dict(local.stop.criteria) == {RETURN: 195.0, "training_iteration": 3}
    assert local.output.experiment_dir == str(tmp_path / "ray_results" / "CartPole-v0")
    # The tutorial's --redis-password means "join the running cluster": Tune, 3 restarts, no token recorded.
    joined = resolved("--redis-password", "f" * 64, "--stop-iters", 1)
    assert (joined.placement.address, joined.placement.max_failures, joined.backend) == ("auto", 3, "tune")
    assert "f" * 64 not in json.dumps(joined.record())
    search = resolved("--grid", "lr=[1e-3,1e-4]", "--metric", "steps_to_reward")
    assert (search.backend, search.search.mode, search.search.space) == \
        ("tune", "min", ((("lr",), "grid", (1e-3, 1e-4)),))
    assert resolved("--max-failures", 1).backend == "tune"
    assert resolved("--name-env", "Acrobot-v1", "--name", "x", "--local-mode", "--num-cpus",
                    3).placement.num_env_runners == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        local.output.name = "other"


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


@pytest.mark.parametrize("trials, per_trial, have, scheduler, line", [
    (4, {"CPU": 9}, {"CPU": 36.0}, None, "4 trials at a time: 36 CPUs / 9 per trial"),
    (9, {"CPU": 9}, {"CPU": 36.0, "GPU": 2.0}, "asha",
     "4 trials at a time: 36 CPUs / 9 per trial; the other 5 queue and start as others end or are stopped"),
    (4, {"CPU": 2, "GPU": 1}, {"CPU": 36.0, "GPU": 2.0}, "pbt",
     "2 trials at a time: 36 CPUs / 2 per trial, 2 GPUs / 1 per trial; the other 2 queue and start in turns: PBT "
     "pauses a trial at its perturbation while others wait"),
    (16, {"CPU": 9, "max_concurrent": 2}, {"CPU": 36.0}, None,
     "2 trials at a time: 36 CPUs / 9 per trial (--max-concurrent 2); the other 14 queue and start as others end"),
])
def test_a_search_says_how_many_trials_the_allocation_holds(trials, per_trial, have, scheduler, line):
    from rlhpc.run.search import packing_line

    limit = per_trial.pop("max_concurrent", None)
    assert packing_line(trials, per_trial, have, scheduler, limit) == line


def test_a_model_based_search_without_its_package_is_one_line(trainer, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else found(name, *a))
    code, _, err = trainer("--search", "optuna", "--loguniform", "lr=1e-5,1e-3", "--stop-iters", 1)
    assert code == 2
    assert "--search optuna needs the optuna package: pip install -e '.[search]'" in one_error_line(err)
