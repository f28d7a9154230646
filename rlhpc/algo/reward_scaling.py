"""Reward scaling on the learner (--scale-rewards): PPO learns from rewards divided by a running standard deviation of
the discounted return, clipped to +-10, as CleanRL's ppo_continuous_action (Gymnasium's NormalizeReward) does.

Done on the learner, not in the env: the env runners report the episodes' returns as the env paid them, so stop
criteria, progress.csv and rlhpc.compare stay in the env's units. The statistics (and each unfinished episode's
running return) live in a learner connector piece placed before PPO's own pieces; the learner's state carries them,
so checkpoints save them and --resume continues with them. One learner only (rlhpc.run.spec refuses more): RLlib
shares each iteration's episodes out between learners, cutting some in two, and each would keep its own statistics.
"""

import copy

import numpy as np
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2

CLIP = 10.0  # CleanRL's clip of the scaled reward
EPSILON = 1e-8  # Gymnasium's NormalizeReward's


class RunningVariance:
    """Mean and variance of a stream of numbers, merged batch by batch (Chan et al.), as Gymnasium's RunningMeanStd."""

    def __init__(self, state: dict | None = None):
        state = state or {"mean": 0.0, "var": 1.0, "count": EPSILON}
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])

    def update(self, values: np.ndarray) -> None:
        if not len(values):
            return
        batch_mean, batch_var, batch_count = float(np.mean(values)), float(np.var(values)), len(values)
        delta, total = batch_mean - self.mean, self.count + batch_count
        self.mean += delta * batch_count / total
        self.var = (self.var * self.count + batch_var * batch_count
                    + delta ** 2 * self.count * batch_count / total) / total
        self.count = total

    def state(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}


class ScaleRewards(ConnectorV2):
    """Divides each episode chunk's rewards by the running std of the discounted return (per agent for a multi-agent
    env, one std for all), then clips them. Chunks of one episode arrive in successive iterations: the discounted
    return carries over by episode id, and restarts at a terminal step (a truncation carries on, as Gymnasium's)."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, gamma: float = 0.99, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma = gamma
        self.returns = RunningVariance()
        self.running_return: dict = {}  # (episode id, agent id) -> discounted return so far, for unfinished episodes

    def __call__(self, *, rl_module, batch, episodes, **kwargs):
        # Each chunk is replaced by a copy with its own scaled rewards, never changed in place: an env runner in this
        # process (--num-cpus 0) keeps the chunks it sent and sums their rewards into the episode's return at its end.
        carried: dict = {}  # running_return as this batch leaves it
        for i, episode in enumerate(episodes):
            if hasattr(episode, "agent_episodes"):  # a MultiAgentEpisode: each agent's chunk
                episodes[i] = copy.copy(episode)
                episodes[i].agent_episodes = {agent: self._scaled(chunk, carried) for agent, chunk in
                                              episode.agent_episodes.items()}
            else:
                episodes[i] = self._scaled(episode, carried)
        self.running_return = carried  # an episode missing from this batch has ended or its runner was replaced
        return batch

    def _scaled(self, episode, carried: dict):
        """A copy of a single-agent chunk whose rewards are scaled (the rest of it shared with the original); its
        discounted return so far goes into carried unless it ended."""
        rewards = np.asarray(episode.get_rewards(), dtype=np.float64)
        key = (episode.id_, episode.agent_id)
        discounted, so_far = np.empty_like(rewards), self.running_return.get(key, 0.0)
        for t, reward in enumerate(rewards):
            so_far = so_far * self.gamma + reward
            discounted[t] = so_far
        self.returns.update(discounted)
        if not episode.is_terminated:
            carried[key] = so_far
        scaled = np.clip(rewards / np.sqrt(self.returns.var + EPSILON), -CLIP, CLIP)
        copied = copy.copy(episode)
        copied.rewards = copy.deepcopy(episode.rewards)
        copied.set_rewards(new_data=scaled.astype(np.float32) if episode.is_numpy else list(scaled))
        return copied

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        return {"returns": self.returns.state(), "running_return": dict(self.running_return)}

    def set_state(self, state: dict) -> None:
        self.returns = RunningVariance(state.get("returns"))
        self.running_return = dict(state.get("running_return", {}))


class RewardScalingPPOLearner(PPOTorchLearner):
    """RLlib's PPO learner with ScaleRewards first in its learner connector, its state in the learner's state."""

    STATE_KEY = "rlhpc_reward_scaling"

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.prepend(ScaleRewards(gamma=self.config.gamma))

    def _scaler(self) -> ScaleRewards | None:
        pieces = getattr(self._learner_connector, "connectors", [])
        return next((piece for piece in pieces if isinstance(piece, ScaleRewards)), None)

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        scaler = self._scaler()
        if scaler is not None and self._check_component(self.STATE_KEY, components, not_components):
            state[self.STATE_KEY] = scaler.get_state()
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        scaler = self._scaler()
        if scaler is not None and self.STATE_KEY in state:
            scaler.set_state(state[self.STATE_KEY])
