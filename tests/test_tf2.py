"""--framework tf2: RLlib's legacy API stack with TensorFlow (run in the .venv-tf venv, `pytest -m tf`)."""

import json

import pytest
from conftest import clean_env, read_progress, run_script

pytestmark = pytest.mark.tf


def test_tf2_ppo_reaches_the_cartpole_v0_threshold(tmp_path):
    pytest.importorskip("tensorflow", reason="needs the [tf] extra: pip install -e '.[test,tf]'")
    out = run_script("simple_example/simple_trainer.py", "--framework", "tf2", "--storage-path", tmp_path,
                     "--as-test", "--seed", 0, env=clean_env(HOME=tmp_path), timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "learner: driver process" in out.stdout  # the legacy stack: no learner actors
    rows = read_progress(tmp_path / "CartPole-v0")
    assert rows[-1]["env_runners/episode_reward_mean"] >= 195
    params = json.loads(next((tmp_path / "CartPole-v0").glob("*/params.json")).read_text())
    assert params["framework"] == "tf2" and params["enable_rl_module_and_learner"] is False
