"""rlhpc/defaults.py: per-algorithm and per-env defaults apply, --set beats them, and they learn beyond CartPole."""

import json

from conftest import RETURN, clean_env, read_progress, run_script

TRAINER = "simple_example/simple_trainer.py"


def printed_config(*args):
    out = run_script(TRAINER, *args, "--print-config")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_pendulum_gets_its_own_ppo_settings_and_set_wins():
    pendulum = printed_config("--name-env", "Pendulum-v1", "--set", "lambda_=0.8")
    assert pendulum["config"]["gamma"] == 0.9  # the env's default, over PPO's 0.99
    assert pendulum["config"]["vf_clip_param"] == 10_000
    assert pendulum["config"]["lambda"] == 0.8  # --set beats the env's 0.95
    assert pendulum["summary"]["tuned_defaults"]["lambda_"] == 0.95  # what was applied before --set
    cartpole = printed_config("--name-env", "CartPole-v1")
    assert cartpole["config"]["gamma"] == 0.99 and cartpole["config"]["vf_clip_param"] == 10_000
    assert "gamma" not in cartpole["summary"]["tuned_defaults"]
    assert cartpole["summary"]["tuned_defaults"]["lr"] == 0.001  # PPO's own defaults still apply


def test_ppo_defaults_learn_pendulum(tmp_path):
    """Random play scores about -1200 per episode; the defaults must get past -400 (RLlib's own stay at -1200)."""
    out = run_script(TRAINER, "--name-env", "Pendulum-v1", "--stop-reward", -400, "--stop-timesteps", 240_000,
                     "--seed", 0, "--as-test", "--storage-path", tmp_path, env=clean_env(HOME=tmp_path), timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = read_progress(tmp_path / "Pendulum-v1")
    assert rows[0][RETURN] < -900, "the first iteration should still play about randomly"
    assert rows[-1][RETURN] >= -400
    assert "summary: reached=yes" in out.stdout
