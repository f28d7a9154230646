"""Multi-agent envs end to end: RendezvousEnv (custom_gym_env/multi_agent_env.py) trained to its optimum with a
shared policy and with one policy per agent (stopped by SIGUSR1 and resumed), then evaluated and compared.
The refusals before Ray starts are in unit/test_multi_agent_policies.py."""

import re
import signal
import subprocess
import time

import pytest
from conftest import PYTHON, REPO, RETURN, clean_env, read_progress, run_module, run_script

TRAINER = "custom_gym_env/custom_env_trainer.py"
OPTIMUM = 1.4  # both walk towards each other: 3 steps of -0.1 and +1 each, for 2 agents
STOP = OPTIMUM - 0.05  # the trainer's default stop reward for the env
POLICY = "env_runners/policy_return_mean_100/"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A shared-policy run to the optimum, and a per-agent run stopped by SIGUSR1 after 3 iterations, then
    resumed to the optimum: {"shared": (dir, stdout), "per-agent": (dir, first stdout, resumed stdout)}."""
    tmp = tmp_path_factory.mktemp("multi_agent")
    env = clean_env(HOME=tmp)
    shared = run_script(TRAINER, "--name-env", "RendezvousEnv", "--seed", 0, "--storage-path", tmp / "shared",
                        "--as-test", env=env)
    assert shared.returncode == 0, shared.stdout[-2000:] + shared.stderr[-3000:]

    log = tmp / "per_agent.log"
    with open(log, "w") as out:
        first = subprocess.Popen([PYTHON, REPO / TRAINER, "--name-env", "RendezvousEnv", "--policies", "per-agent",
                                  "--seed", "0", "--storage-path", tmp / "per_agent"], env=env, cwd=REPO, stdout=out,
                                 stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 240
        while not re.search(r"^iter +3 ", log.read_text(), re.MULTILINE) and time.monotonic() < deadline:
            assert first.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        first.send_signal(signal.SIGUSR1)
        assert first.wait(timeout=120) == 0, log.read_text()[-3000:]
    resumed = run_script(TRAINER, "--resume", "--name-env", "RendezvousEnv", "--storage-path", tmp / "per_agent",
                         "--as-test", env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    return {"shared": (tmp / "shared" / "RendezvousEnv", shared.stdout),
            "per-agent": (tmp / "per_agent" / "RendezvousEnv", log.read_text(), resumed.stdout)}


def test_a_shared_policy_reaches_the_optimum(runs):
    experiment, out = runs["shared"]
    assert "policies: one shared policy for 2 agents: agent_0 -> shared, agent_1 -> shared" in out
    assert re.search(r"^iter +1 .*\[shared -?\d+\.\d\d\]", out, re.MULTILINE), out
    rows = read_progress(experiment)
    assert rows[-1][RETURN] >= STOP
    assert rows[-1][POLICY + "shared"] == pytest.approx(rows[-1][RETURN])  # both agents' returns: all of it
    print(f"shared policy: {rows[-1]['time_total_s']:.1f} s, {rows[-1]['num_env_steps_sampled_lifetime']:,} steps "
          f"to {rows[-1][RETURN]:.2f}")


def test_per_agent_policies_resume_after_a_signal_and_reach_the_optimum(runs):
    experiment, first, resumed = runs["per-agent"]
    assert "policies: 2 policies for 2 agents (per-agent): agent_0 -> agent_0, agent_1 -> agent_1" in first
    assert "stopped by SIGUSR1; state and checkpoint saved" in first
    stopped_at = int(re.search(r"summary: reached=no .* iterations=(\d+) ", first).group(1))
    assert f"resuming {experiment} after iteration {stopped_at}" in resumed
    assert "agent_0 -> agent_0" in resumed  # the run's own --policies, not the default
    rows = read_progress(experiment)
    assert [int(r["training_iteration"]) for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) > stopped_at and rows[-1][RETURN] >= STOP
    # Each policy's share of the total, with 100-episode windows that carried across the resume.
    last = rows[-1]
    assert last[POLICY + "agent_0"] + last[POLICY + "agent_1"] == pytest.approx(last[RETURN], abs=1e-6)
    after = rows[stopped_at]
    assert abs(after[POLICY + "agent_0"] - rows[stopped_at - 1][POLICY + "agent_0"]) < 0.5, "the window restarted"
    print(f"per-agent policies: {last['time_total_s']:.1f} s, {last['num_env_steps_sampled_lifetime']:,} steps "
          f"to {last[RETURN]:.2f}")


def test_evaluate_plays_each_agent_with_its_policy(runs):
    for name, policies in (("shared", ("shared", "shared")), ("per-agent", ("agent_0", "agent_1"))):
        experiment = runs[name][0]
        out = run_module("rlhpc.evaluate", experiment, "--episodes", 3, "--seed", 0)
        assert out.returncode == 0, out.stderr[-3000:]
        assert re.findall(r"^episode +\d  return +1\.40  length +3  \(agent_0 0\.70, agent_1 0\.70\)$", out.stdout,
                          re.MULTILINE), out.stdout
        assert f"mean return by agent: agent_0 0.70 ({policies[0]}), agent_1 0.70 ({policies[1]})" in out.stdout


def test_compare_plots_the_total_and_each_policys_share(runs, tmp_path):
    figure = tmp_path / "multi_agent.png"
    out = run_module("rlhpc.compare", runs["shared"][0], runs["per-agent"][0], "--per-policy", "--out", figure)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"^RendezvousEnv \(policies=shared\): .*final return 1\.\d\d \(shared 1\.\d\d\)$", out.stdout,
                     re.MULTILINE), out.stdout
    assert re.search(r"^RendezvousEnv \(policies=agent_0,agent_1\): .* \(agent_0 0\.\d\d, agent_1 0\.\d\d\)$",
                     out.stdout, re.MULTILINE), out.stdout
    from matplotlib.image import imread

    image = imread(figure)
    assert image.shape[:2] == (500, 800)
    # The total of each run in matplotlib's first two colours, the policies' shares dashed in the same ones.
    rgb = image[..., :3] * 255
    drawn = [int((abs(rgb - color).sum(axis=-1) < 40).sum()) for color in ((31, 119, 180), (255, 127, 14))]
    assert drawn[0] > 300 and drawn[1] > 300, drawn
