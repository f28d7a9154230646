"""Tells from an observation space whether it carries an action mask, and checks it before Ray starts.

An env that forbids some actions at some steps (a board game's occupied squares, a scheduler's busy machines)
says so in its observation: a gymnasium Dict holding the real observation and an `action_mask`, 1 for the actions
allowed now and 0 for the others. PettingZoo's classic envs name the observation "observation", RLlib's examples
"observations"; both are taken. rlhpc.algo.action_masking is the network that reads it; this module only looks at
spaces (no Ray), so the decision and its refusals are one line before anything starts.
"""

import math

import gymnasium

from rlhpc.errors import UserError

MASK_KEY = "action_mask"
OBSERVATION_KEYS = ("observation", "observations")  # PettingZoo's, RLlib's example's
# The inner observations the masking module can feed its default network (flattened, one-hot for integers).
INNER_SPACES = (gymnasium.spaces.Box, gymnasium.spaces.Discrete, gymnasium.spaces.MultiDiscrete,
                gymnasium.spaces.MultiBinary)


def observation_key(space) -> str | None:
    """The key of the real observation in a space that carries an action mask ("observation" or "observations"),
    or None for a space without one. A Dict with an `action_mask` that is not {observation, action_mask} is
    refused: its mask would otherwise be flattened into the observation and silently ignored."""
    if not isinstance(space, gymnasium.spaces.Dict) or MASK_KEY not in space.spaces:
        return None
    others = [key for key in space.spaces if key != MASK_KEY]
    if len(others) == 1 and others[0] in OBSERVATION_KEYS:
        return others[0]
    raise UserError(f"the observation has an {MASK_KEY!r} beside {', '.join(map(repr, others)) or 'nothing'}: "
                    f"an env with an action mask gives {{'observation': ..., '{MASK_KEY}': ...}} (or "
                    "'observations'); put the other parts inside 'observation' (a Box, Discrete, "
                    "MultiDiscrete or MultiBinary)")


def check(observation_space, action_space, agent=None) -> str | None:
    """observation_key(), plus what the masking module needs: a Discrete action space, a mask of one 0/1 entry per
    action, an inner observation it can flatten. -> the observation key, or None (no mask)."""
    key = observation_key(observation_space)
    if key is None:
        return None
    whose = f" of agent {agent!r}" if agent is not None else ""
    inner, mask = observation_space[key], observation_space[MASK_KEY]
    if not isinstance(action_space, gymnasium.spaces.Discrete):
        raise UserError(f"the observation{whose} has an {MASK_KEY!r} but the action space is {action_space}: "
                        "action masks are supported for Discrete action spaces")
    if not isinstance(mask, (gymnasium.spaces.Box, gymnasium.spaces.MultiBinary)) or \
            tuple(mask.shape) != (int(action_space.n),):
        raise UserError(f"the {MASK_KEY!r}{whose} is {mask}: give a Box(0, 1, ({action_space.n},)) or "
                        f"MultiBinary({action_space.n}), one entry per action (1 = allowed)")
    if not isinstance(inner, INNER_SPACES) or (isinstance(inner, gymnasium.spaces.MultiDiscrete)
                                               and len(inner.shape) != 1):
        raise UserError(f"the {key!r}{whose} beside the {MASK_KEY!r} is {inner}: the masking policy takes a Box "
                        "(any shape), Discrete, MultiDiscrete or MultiBinary there; flatten the rest into a Box "
                        "in the env")
    return key


def random_action(action_space, obs):
    """A random action the observation's mask allows, else any from the space: the probe's random steps must not
    take an action a masking env forbids (it may end the episode or raise, as a strict env does)."""
    mask = obs.get(MASK_KEY) if isinstance(obs, dict) else None
    if mask is not None and isinstance(action_space, gymnasium.spaces.Discrete):
        import numpy as np

        mask = np.asarray(mask).astype(np.int8).reshape(-1)
        if mask.shape == (int(action_space.n),) and mask.any():
            return action_space.sample(mask=mask)
    return action_space.sample()


def input_size(inner) -> int:
    """How many numbers the network sees for the inner observation (Box flattened, Discrete parts one-hot)."""
    if isinstance(inner, gymnasium.spaces.Discrete):
        return int(inner.n)
    if isinstance(inner, gymnasium.spaces.MultiDiscrete):
        return int(sum(inner.nvec))
    return math.prod(inner.shape)


def masked_agents(probe) -> dict:
    """{agent: observation key} for the agents whose observations carry a mask; a single-agent env's agent is None.
    `probe` is rlhpc.envs.sources.Probe (observation_space, action_space, agent_spaces)."""
    if probe.agent_spaces is not None:
        found = {agent: check(obs, act, agent) for agent, (obs, act) in probe.agent_spaces.items()}
    else:
        found = {None: check(probe.observation_space, probe.action_space)}
    return {agent: key for agent, key in found.items() if key is not None}


def first_line(probe) -> str | None:
    """What the trainer's first lines say about a mask, or None when the env has none."""
    masked = masked_agents(probe)
    if not masked:
        return None
    agents = [agent for agent in masked if agent is not None]
    where = f"the observations of {', '.join(map(str, agents))}" if agents else "the observation"
    return f"action mask found in {where} ({MASK_KEY!r}): masked actions are never picked"
