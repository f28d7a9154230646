"""The env guard (rlhpc.envs.guard) for a multi-agent env: RLlib's MultiAgentEnv interface around the same rebuild,
timer and failure budget (rlhpc.envs.guard_base). Its own module: importing RLlib's MultiAgentEnv loads RLlib, which
the trainer's checks before Ray starts do without."""

from collections.abc import Callable

from ray.rllib.env.multi_agent_env import MultiAgentEnv

from rlhpc.envs.guard_base import Guarded


class MultiAgentEnvGuard(Guarded, MultiAgentEnv):
    """A failed step ends the episode for every agent ("__all__" truncated); the agents that were to act get back
    the observation they acted on, reward 0 and the info key that counts the failure, as at a time limit."""

    def __init__(self, env, rebuild: Callable, step_timeout_s: float, name: str = "env copy",
                 release: Callable | None = None):
        self._guard(env, rebuild, step_timeout_s, name, release)
        MultiAgentEnv.__init__(self)
        for attribute in ("observation_space", "action_space", "observation_spaces", "action_spaces",
                          "possible_agents", "metadata", "render_mode"):
            if hasattr(env, attribute):
                setattr(self, attribute, getattr(env, attribute))

    @property
    def agents(self):
        return getattr(self.env, "agents", [])

    @agents.setter
    def agents(self, value):  # MultiAgentEnv.__init__ sets it; the held env keeps its own
        pass

    def get_observation_space(self, agent_id):
        return self.env.get_observation_space(agent_id)

    def get_action_space(self, agent_id):
        return self.env.get_action_space(agent_id)

    def reset(self, *, seed=None, options=None):
        return self._reset(seed=seed, options=options)

    def step(self, action_dict):
        def cut_short(kind: str):
            acting: dict = dict(self._last_observation or {})
            return (acting, dict.fromkeys(acting, 0.0), {"__all__": False},
                    {"__all__": True, **dict.fromkeys(acting, True)}, {agent: {kind: 1} for agent in acting})

        return self._step(action_dict, cut_short)

    def render(self):
        return self.env.render()

    def close(self):
        Guarded.close(self)
