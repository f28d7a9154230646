"""--scale-rewards (rlhpc/algo/reward_scaling.py), in this process: the running variance is the variance of all the
returns seen, an episode's discounted return carries over from one chunk to the next and restarts after a terminal
step, the scaled rewards are clipped, and the state round-trips (the learner's state carries it into checkpoints).
The flag's resolution and its one-line refusals: tests/unit/test_env_families.py."""

import numpy as np
import pytest
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rlhpc.algo.reward_scaling import CLIP, RunningVariance, ScaleRewards


def chunk(rewards, *, episode_id="e", terminated=False) -> SingleAgentEpisode:
    """An episode chunk as an env runner sends it to the learner: observations, actions and the env's rewards."""
    episode = SingleAgentEpisode(id_=episode_id, observations=[0.0] * (len(rewards) + 1), actions=[0] * len(rewards),
                                 rewards=list(rewards), terminated=terminated, len_lookback_buffer=0)
    return episode


def test_the_running_variance_merged_batch_by_batch_is_the_variance_of_all():
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 3.0, size=n) for n in (7, 300, 1, 50)]
    running = RunningVariance()
    for batch in batches:
        running.update(batch)
    everything = np.concatenate(batches)
    assert running.mean == pytest.approx(everything.mean(), rel=1e-6)
    assert running.var == pytest.approx(everything.var(), rel=1e-5)
    assert RunningVariance(running.state()).state() == running.state()


def test_an_episodes_discounted_return_carries_over_chunks_and_restarts_at_its_end():
    scaler = ScaleRewards(gamma=0.5)
    first = chunk([1.0, 1.0], episode_id="a")
    scaler(rl_module=None, batch={}, episodes=[first])
    assert scaler.running_return == {("a", None): pytest.approx(1.5)}  # 1 * 0.5 + 1
    # Its next chunk goes on from 1.5: returns 1.75 and 1.875 join the statistics, not 1 and 1.5 again.
    second = chunk([1.0, 1.0], episode_id="a", terminated=True)
    episodes = [second]
    scaler(rl_module=None, batch={}, episodes=episodes)
    seen = np.array([1.0, 1.5, 1.75, 1.875])
    assert scaler.returns.var == pytest.approx(seen.var(), rel=1e-4)
    assert scaler.running_return == {}  # terminated: the next episode starts from 0
    # The rewards the learner trains on are the env's divided by the return's std, in a copy of the chunk: an env
    # runner in the learner's process sums the chunks it sent into the episode's return, as the env paid it.
    assert episodes[0].get_rewards() == pytest.approx(np.full(2, 1.0 / np.sqrt(seen.var() + 1e-8)), rel=1e-5)
    assert second.get_rewards() == [1.0, 1.0] and second.get_return() == 2.0


def test_scaled_rewards_are_clipped_and_the_state_round_trips():
    scaler = ScaleRewards(gamma=0.99)
    scaler(rl_module=None, batch={}, episodes=[chunk([0.0] * 399 + [1.0], episode_id="calm")])
    episodes = [chunk([0.0], episode_id="calm"), chunk([1000.0], episode_id="spike")]  # 1 return of 1,000 among 401:
    scaler(rl_module=None, batch={}, episodes=episodes)  # a std of ~50, a scaled reward of ~20
    assert episodes[1].get_rewards()[0] == pytest.approx(CLIP)
    restored = ScaleRewards(gamma=0.99)
    restored.set_state(scaler.get_state())
    assert restored.get_state() == scaler.get_state()
    assert restored.running_return == {("calm", None): pytest.approx(0.99), ("spike", None): pytest.approx(1000.0)}
