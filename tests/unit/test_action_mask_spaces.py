"""Action masks from spaces alone (rlhpc.envs.action_masks): found under both key names, refused in one line when
the masking policy cannot take them, said in the first lines; and the masking RLModule (rlhpc.algo.action_masking),
built without starting Ray, gives masked actions no probability for a board of any rank."""

import gymnasium as gym
import numpy as np
import pytest

from rlhpc.envs import action_masks
from rlhpc.envs.sources import Probe
from rlhpc.errors import UserError

BOARD = gym.spaces.Box(0, 1, (3, 3, 2), np.int8)  # PettingZoo tic-tac-toe's
MASK9 = gym.spaces.Box(0, 1, (9,), np.int8)


def masked(inner=BOARD, mask=MASK9, key="observation"):
    return gym.spaces.Dict({key: inner, "action_mask": mask})


def probe(obs, agents=None):
    act = gym.spaces.Discrete(9)
    return Probe(spec=None, observation_space=obs, action_space=act, creator=None,
                 agent_spaces={a: (obs, act) for a in agents} if agents else None)


@pytest.mark.parametrize("key", ["observation", "observations"])
def test_a_mask_is_found_under_pettingzoos_and_rllibs_key(key):
    assert action_masks.observation_key(masked(key=key)) == key
    assert action_masks.check(masked(key=key), gym.spaces.Discrete(9)) == key


@pytest.mark.parametrize("space", [BOARD, gym.spaces.Discrete(3), gym.spaces.Dict({"observation": BOARD}),
                                   gym.spaces.Dict({"position": BOARD, "velocity": BOARD})])
def test_spaces_without_a_mask_are_none(space):
    assert action_masks.observation_key(space) is None
    assert action_masks.first_line(probe(space)) is None


@pytest.mark.parametrize("obs, act, words", [
    (gym.spaces.Dict({"board": BOARD, "action_mask": MASK9}), gym.spaces.Discrete(9), "'board'"),
    (gym.spaces.Dict({"observation": BOARD, "extra": BOARD, "action_mask": MASK9}), gym.spaces.Discrete(9), "'extra'"),
    (masked(), gym.spaces.Box(-1, 1, (9,)), "Discrete action spaces"),
    (masked(mask=gym.spaces.Box(0, 1, (8,), np.int8)), gym.spaces.Discrete(9), "one entry per action"),
    (masked(inner=gym.spaces.Tuple([BOARD, BOARD])), gym.spaces.Discrete(9), "Tuple"),
])
def test_a_mask_the_policy_cannot_take_is_one_line(obs, act, words):
    with pytest.raises(UserError) as e:
        action_masks.check(obs, act)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_first_lines_say_the_mask_was_found():
    assert action_masks.first_line(probe(masked())) == \
        "action mask found in the observation ('action_mask'): masked actions are never picked"
    line = action_masks.first_line(probe(masked(), agents=["player_1", "player_2"]))
    assert line == "action mask found in the observations of player_1, player_2 ('action_mask'): masked actions " \
        "are never picked"


def test_random_steps_stay_inside_the_mask():
    space = gym.spaces.Discrete(9, seed=0)
    mask = np.zeros(9, np.int8)
    mask[[2, 7]] = 1
    picked = {action_masks.random_action(space, {"observation": None, "action_mask": mask}) for _ in range(200)}
    assert picked == {2, 7}


@pytest.mark.parametrize("inner", [BOARD, gym.spaces.Discrete(4), gym.spaces.MultiDiscrete([3, 2]),
                                   gym.spaces.Box(-1, 1, (5, 5), np.float32)])
def test_the_masking_module_gives_masked_actions_no_probability(inner):
    torch = pytest.importorskip("torch")
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rlhpc.algo.action_masking import ActionMaskingTorchRLModule

    space = masked(inner=inner, key="observations")
    module = RLModuleSpec(module_class=ActionMaskingTorchRLModule, observation_space=space,
                          action_space=gym.spaces.Discrete(9), model_config={"fcnet_hiddens": [8]}).build()
    assert module.observation_space == space  # what a checkpoint records and evaluate reads
    space.seed(0)
    samples = [space.sample() for _ in range(16)]
    rng = np.random.default_rng(0)
    for sample in samples:
        sample["action_mask"][rng.integers(9)] = 1  # at least one legal action
    batch = {key: torch.as_tensor(np.stack([s[key] for s in samples])) for key in space.spaces}
    allowed = batch["action_mask"].bool()
    for forward in (module.forward_exploration, module.forward_inference, module.forward_train):
        logits = forward({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS]
        probs = torch.softmax(logits, dim=-1)
        assert torch.all(probs[~allowed] == 0) and torch.allclose(probs.sum(-1), torch.ones(16))
    # The caller's batch is left as it was: RLlib's GAE and the learner read the same one.
    assert module.compute_values({Columns.OBS: batch}).shape == (16,)
    assert set(batch) == {"observations", "action_mask"} and batch["action_mask"].dtype == torch.int8


def test_masked_agents_get_the_masking_module_and_their_dict_unflattened():
    from types import SimpleNamespace

    from ray.rllib.algorithms.ppo import PPOConfig

    from rlhpc.algo.action_masking import ActionMaskingTorchRLModule
    from rlhpc.algo.config import flatten_observations, observation_connector, use_action_masks

    # What these read of a RunSpec: its env and training parts (rlhpc.run.spec).
    ppo = SimpleNamespace(legacy_stack=False, algo="PPO")
    single = SimpleNamespace(env=SimpleNamespace(flatten_observations=True, agent_policy={}, probe=probe(masked())),
                             training=ppo)
    config = PPOConfig()
    assert use_action_masks(config, single) == {None: "observation"}
    assert config._rl_module_spec.module_class is ActionMaskingTorchRLModule
    assert observation_connector(single, {None: "observation"}) is None  # the module needs the Dict whole
    assert observation_connector(single, {}) is flatten_observations

    # Two agents, one with a mask: only its policy gets the masking module, only the other's observation is flattened.
    spaces = {"masked": (masked(), gym.spaces.Discrete(9)), "plain": (gym.spaces.Discrete(4), gym.spaces.Discrete(9))}
    mixed = SimpleNamespace(env=SimpleNamespace(flatten_observations=True, agent_policy={"masked": "p", "plain": "q"},
                                                probe=Probe(spec=None, observation_space=None, action_space=None,
                                                            creator=None, agent_spaces=spaces)),
                            training=ppo)
    config = PPOConfig()
    assert use_action_masks(config, mixed) == {"masked": "observation"}
    assert set(config._rl_module_spec.rl_module_specs) == {"p"}
    assert observation_connector(mixed, {"masked": "observation"}).keywords == {"agent_ids": ["plain"]}

    with pytest.raises(UserError, match="supported with PPO on torch"):
        use_action_masks(PPOConfig(), SimpleNamespace(env=single.env, training=SimpleNamespace(legacy_stack=False,
                                                                                               algo="APPO")))
