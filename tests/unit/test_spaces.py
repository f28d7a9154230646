"""What the default networks take of an env's spaces (rlhpc.envs.spaces): observations kept, flattened or given to a
CNN, said in one line; action spaces RLlib cannot act in refused in one line naming the way out."""

import gymnasium as gym
import numpy as np
import pytest

from rlhpc.envs.spaces import check_action_space, observation_plan
from rlhpc.errors import UserError

Box = gym.spaces.Box


@pytest.mark.parametrize(("space", "flatten", "said"), [
    (Box(-1, 1, (4,)), False, None),
    (Box(-np.inf, np.inf, (5, 5)), True, "observation Box(5, 5) flattened to 25"),
    (Box(0, 255, (84, 84, 3), np.uint8), False, "observation Box(84, 84, 3): an image, to RLlib's CNN"),
    (Box(0, 1, (3, 3, 2)), True, "observation Box(3, 3, 2) flattened to 18 (no default CNN for this image size: "
                                 "set model_config.conv_filters for one)"),
    (Box(0, 1, (2, 3, 4, 5)), True, "observation Box(2, 3, 4, 5) flattened to 120"),
    (gym.spaces.Discrete(16), True, "observation Discrete(16) one-hot encoded to 16"),
    (gym.spaces.MultiDiscrete([3, 4]), True, "observation MultiDiscrete([3 4]) flattened to 7"),
    (gym.spaces.Dict({"zones": Box(-1, 1, (4, 2)), "hour": gym.spaces.Discrete(24),
                      "occupied": gym.spaces.MultiBinary(4)}), True,
     "observation Dict(hour: Discrete(24), occupied: MultiBinary(4), zones: Box(4, 2)) flattened to 36"),
    (gym.spaces.Tuple((Box(-1, 1, (2,)), gym.spaces.Discrete(3))), True,
     "observation Tuple(Box(2), Discrete(3)) flattened to 5"),
])
def test_every_observation_space_gets_a_plan_said_in_one_line(space, flatten, said):
    assert observation_plan(space) == (flatten, said)


def test_an_image_without_a_default_cnn_goes_to_the_cnn_when_its_filters_are_given():
    assert observation_plan(Box(0, 1, (3, 3, 2)), conv_filters_given=True)[0] is False


def test_a_space_that_cannot_be_flattened_is_refused():
    with pytest.raises(UserError, match="cannot be flattened for RLlib's default networks"):
        observation_plan(gym.spaces.Dict({"name": gym.spaces.Text(8), "x": Box(-1, 1, (2,))}))


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.MultiDiscrete([2, 3]), Box(-1, 1, (2,)),
                                   gym.spaces.Dict({"a": gym.spaces.Discrete(2), "b": Box(-1, 1, (1,))}),
                                   gym.spaces.Tuple((gym.spaces.Discrete(2), Box(-1, 1, (3,))))])
def test_action_spaces_rllib_acts_in_pass(space):
    check_action_space(space)


@pytest.mark.parametrize(("space", "way_out"), [
    (gym.spaces.MultiBinary(4), "a MultiBinary is MultiDiscrete([2] * n)"),
    (Box(-1, 1, (2, 2)), "declare Box(..., (4,)) and reshape the action"),
    (Box(0, 5, (3,), np.int64), "MultiDiscrete"),
    (gym.spaces.Dict({"ok": gym.spaces.Discrete(2), "bad": gym.spaces.MultiBinary(2)}), "MultiDiscrete([2] * n)"),
])
def test_action_spaces_rllib_cannot_act_in_are_refused_with_the_way_out(space, way_out):
    with pytest.raises(UserError, match=r"^action space .*") as refused:
        check_action_space(space)
    assert way_out in str(refused.value)


def test_an_env_whose_action_space_rllib_cannot_act_in_is_one_line_before_ray(trainer, tmp_path):
    (tmp_path / "switches.py").write_text(
        "import gymnasium as gym\nimport numpy as np\n\n\n"
        "class Switches(gym.Env):\n"
        "    observation_space = gym.spaces.Box(0, 1, (4,), np.float32)\n"
        "    action_space = gym.spaces.MultiBinary(4)\n\n"
        "    def reset(self, *, seed=None, options=None):\n"
        "        return np.zeros(4, np.float32), {}\n\n"
        "    def step(self, action):\n"
        "        return np.zeros(4, np.float32), 0.0, True, False, {}\n")
    code, _, err = trainer("--name-env", tmp_path / "switches.py:Switches", "--print-config")
    assert code == 2
    assert err.strip() == (f"error: {tmp_path / 'switches.py'}:Switches: action space MultiBinary(4) has no RLlib "
                           "action distribution: use Discrete, MultiDiscrete, a float Box, or a Dict/Tuple of them (a "
                           "MultiBinary is MultiDiscrete([2] * n))")
