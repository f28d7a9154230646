"""PettingZoo's tic-tac-toe, an AEC (turn-based) env whose observation carries an action mask, in RLlib's
PettingZooEnv wrapper: the tests' `--name-env tests/tictactoe_env.py:make_env`. With env_config strict=True a
masked move raises instead of ending the game, so a run that ever picks one fails."""

from pettingzoo.classic import tictactoe_v3
from ray.rllib.env.wrappers.pettingzoo_env import PettingZooEnv


class StrictPettingZooEnv(PettingZooEnv):
    """PettingZooEnv that refuses a masked move when strict (PettingZoo itself ends the game, the mover losing)."""

    def __init__(self, env, strict: bool = False):
        super().__init__(env)
        self.strict = strict

    def step(self, action):
        agent = self.env.agent_selection
        move = action[agent]
        if self.strict and move is not None and not self.env.observe(agent)["action_mask"][move]:
            raise ValueError(f"tic-tac-toe: {agent} picked the masked move {move}")
        return super().step(action)


def make_env(env_config=None):
    config = dict(env_config or {})
    strict = config.pop("strict", False)
    if config or not isinstance(strict, bool):
        raise ValueError(f"tictactoe_env: env_config takes strict (true or false) only, got {dict(env_config)}")
    return StrictPettingZooEnv(tictactoe_v3.env(), strict)
