"""Multi-agent envs (rlhpc.envs.multi_agent): the refusals before Ray starts and the policy each agent gets;
training them in test_multi_agent.py."""

import json

import pytest
from conftest import REPO, one_error_line

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
