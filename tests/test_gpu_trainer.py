"""simple_example_gpu/: the GPU-count mapping, refusal without GPUs, and the conda env files."""

import json
import re

import pytest
import tomllib
import yaml
from conftest import REPO, clean_env, error_lines, read_progress, run_script
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

TRAINER = "simple_example_gpu/simple_trainer.py"


def printed_config(*args):
    out = run_script(TRAINER, "--num-cpus", 2, *args, "--print-config")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("gpus, learners, per_learner, gpu_total", [
    ("2", 2, 1, 2),  # two remote learners, one GPU each (0, 0.5 and 1: unit/test_flags.py, in-process)
])
def test_print_config_maps_gpus_to_learners(gpus, learners, per_learner, gpu_total):
    summary = printed_config("--num-gpus", gpus)["summary"]
    assert summary["num_learners"] == learners
    assert summary["num_gpus_per_learner"] == per_learner
    assert summary["resources"].get("GPU", 0) == gpu_total
    assert summary["resources"]["CPU"] == 3  # 2 env runners + the algorithm process
    assert summary["num_env_runners"] == 2 and summary["framework"] == "torch"


def test_print_config_shows_overrides_and_the_full_config():
    printed = printed_config("--set", "lr=0.001", "--set", "model_config.fcnet_hiddens=[32]", "--seed", "7")
    assert printed["config"]["lr"] == 0.001 and printed["summary"]["seed"] == 7
    assert printed["config"]["_model_config"]["fcnet_hiddens"] == [32] or "[32]" in json.dumps(printed["config"])


def test_gpu_trainer_without_a_gpu_says_so_and_leaves_no_trial(tmp_path):
    out = run_script(TRAINER, "--storage-path", tmp_path / "results", env=clean_env(HOME=tmp_path), timeout=120)
    assert out.returncode == 2
    assert error_lines(out.stderr) == [
        "error: --num-gpus 1 needs 1 GPU(s) for the learner(s), but this machine has no GPU"]
    assert out.stderr.strip().splitlines() == error_lines(out.stderr)
    assert not list((tmp_path / "results").glob("*/*")), "a Tune experiment was started"


def test_local_mode_trains_on_the_cpu_without_a_gpu(tmp_path):
    """--local-mode is one process on one core: the learner goes on the CPU, so no GPU (nor CUDA check) is needed."""
    out = run_script(TRAINER, "--local-mode", "--stop-iters", 1, "--storage-path", tmp_path,
                     env=clean_env(HOME=tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(read_progress(tmp_path / "CartPole-v0")) == 1


def test_tf2_without_tensorflow_names_the_extra():
    pytest.importorskip("ray")
    try:
        import tensorflow  # noqa: F401
        pytest.skip("TensorFlow is installed in this venv")
    except ImportError:
        pass
    out = run_script("simple_example/simple_trainer.py", "--framework", "tf2", "--print-config")
    assert out.returncode == 2
    assert "--framework tf2 needs tensorflow and tf_keras: pip install -e '.[tf]'" in out.stderr


ENV_FILES = ["env_example.yml", "env_example_gpu.yml", "env_example_optimized_tf.yml"]


@pytest.mark.parametrize("name", ENV_FILES)
def test_conda_env_files_pin_what_pyproject_pins(name):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    env = yaml.safe_load((REPO / name).read_text())
    assert env["name"] and "pip" in env["dependencies"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert SpecifierSet(project["requires-python"]).contains(python.split("=", 1)[1] + ".0")
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_lines, "the env must install this project"
    reqs = {Requirement(line).name: Requirement(line) for line in pip_lines if not line.startswith("-")}
    for package in ("ray", "torch"):
        assert reqs[package].specifier == pinned[package].specifier, f"{name}: {package} differs from pyproject"
    if "tf" in name:
        assert {"tensorflow", "tf-keras"} <= set(reqs) and env["variables"]["TF_USE_LEGACY_KERAS"] == "1"


def test_all_env_files_use_the_same_python():
    versions = {re.search(r"python=(\S+)", (REPO / n).read_text()).group(1) for n in ENV_FILES}
    assert len(versions) == 1
