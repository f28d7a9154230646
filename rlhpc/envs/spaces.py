"""What RLlib's default networks can take of an env's spaces, decided before Ray starts: observations kept, flattened
or given to a CNN (said in one line), and action spaces RLlib can act in (anything else refused in one line).

RLlib 2.60's default encoders take a 1-D Box (an MLP) and a 3-D Box of a few image sizes (a CNN); a 2-D Box (a grid,
a table of vehicles, a building's zones x features) fails deep in the first env runner ("No default encoder config
... 2D Box spaces are not supported"), and so do Discrete, Dict and Tuple observations. Those are flattened by
RLlib's FlattenObservations connector (one-hot for Discrete parts); evaluate repeats it (gymnasium.spaces.flatten).
"""

import math

import gymnasium

from rlhpc.errors import UserError


def describe(space) -> str:
    """Box(5, 5) rather than Box(-inf, inf, (5, 5), float32): the shape is what the first lines are about."""
    if isinstance(space, gymnasium.spaces.Box):
        return f"Box({', '.join(map(str, space.shape))})" if space.shape else "Box()"
    if isinstance(space, gymnasium.spaces.Dict):
        return "Dict(" + ", ".join(f"{key}: {describe(part)}" for key, part in space.spaces.items()) + ")"
    if isinstance(space, gymnasium.spaces.Tuple):
        return "Tuple(" + ", ".join(describe(part) for part in space.spaces) + ")"
    return str(space)


def has_default_cnn(shape) -> bool:
    """RLlib has a default CNN for this image shape ([H, W, C] with H x W one of its known sizes)."""
    from ray.rllib.models.utils import get_filter_config

    try:
        get_filter_config(shape)
    except ValueError:
        return False
    return True


def observation_plan(space, *, conv_filters_given: bool = False) -> tuple:
    """-> (flatten: bool, what was done as one line, or None when the observation goes in as it is)."""
    if isinstance(space, gymnasium.spaces.Box):
        if len(space.shape) == 1:
            return False, None
        if len(space.shape) == 3 and (conv_filters_given or has_default_cnn(space.shape)):
            return False, f"observation {describe(space)}: an image, to RLlib's CNN"
        size = math.prod(space.shape)
        why = " (no default CNN for this image size: set model_config.conv_filters for one)" \
            if len(space.shape) == 3 else ""
        return True, f"observation {describe(space)} flattened to {size}{why}"
    if not flattenable(space):
        raise UserError(f"observation space {space} cannot be flattened for RLlib's default networks (Box, "
                        "Discrete, MultiDiscrete, MultiBinary, Dict and Tuple of them can): give the env a Box "
                        "observation, or write an RLModule for it")
    size = gymnasium.spaces.flatdim(space)
    how = "one-hot encoded" if isinstance(space, gymnasium.spaces.Discrete) else "flattened"
    return True, f"observation {describe(space)} {how} to {size}"


def flattenable(space) -> bool:
    """The spaces RLlib's FlattenObservations connector takes (Text, Graph and Sequence have no fixed size)."""
    simple = (gymnasium.spaces.Box, gymnasium.spaces.Discrete, gymnasium.spaces.MultiDiscrete,
              gymnasium.spaces.MultiBinary)
    if isinstance(space, simple):
        return True
    if isinstance(space, (gymnasium.spaces.Dict, gymnasium.spaces.Tuple)):
        parts = space.spaces.values() if isinstance(space, gymnasium.spaces.Dict) else space.spaces
        return all(flattenable(part) for part in parts)
    return False


def check_action_space(space, agent=None) -> None:
    """RLlib's action distributions: Categorical (Discrete), MultiCategorical (MultiDiscrete), Gaussian (a float Box
    of rank <= 1), and Dict/Tuple of them. Anything else fails in RLlib's catalog after Ray started: refused here."""
    whose = f" of agent {agent!r}" if agent is not None else ""
    if isinstance(space, (gymnasium.spaces.Discrete, gymnasium.spaces.MultiDiscrete)):
        return
    if isinstance(space, gymnasium.spaces.Box):
        if space.dtype is not None and space.dtype.kind in "iu":
            raise UserError(f"action space{whose} {space} is an integer Box: RLlib acts in MultiDiscrete (one "
                            "choice per dimension) or float Box spaces; declare it as one of those")
        if len(space.shape) > 1:
            raise UserError(f"action space{whose} {space} has {len(space.shape)} dimensions: RLlib's Gaussian "
                            f"acts in a 1-D Box; declare Box(..., ({math.prod(space.shape)},)) and reshape the action "
                            "in the env's step")
        return
    if isinstance(space, gymnasium.spaces.Dict):
        for part in space.spaces.values():
            check_action_space(part, agent)
        return
    if isinstance(space, gymnasium.spaces.Tuple):
        for part in space.spaces:
            check_action_space(part, agent)
        return
    way_out = " (a MultiBinary is MultiDiscrete([2] * n))" if isinstance(space, gymnasium.spaces.MultiBinary) else ""
    raise UserError(f"action space{whose} {space} has no RLlib action distribution: use Discrete, MultiDiscrete, a "
                    f"float Box, or a Dict/Tuple of them{way_out}")


def _observation_spaces(probe) -> dict:
    """{agent: observation space} (agent None for a single-agent env)."""
    if probe.agent_spaces is not None:
        return {agent: obs for agent, (obs, _) in probe.agent_spaces.items()}
    return {None: probe.observation_space}


def needs_flattening(probe, *, conv_filters_given: bool = False) -> bool:
    """Whether any unmasked observation goes through RLlib's FlattenObservations (a masked one goes to the
    action-masking module whole: rlhpc.envs.action_masks)."""
    from rlhpc.envs.action_masks import masked_agents

    masked = masked_agents(probe)
    return any(observation_plan(space, conv_filters_given=conv_filters_given)[0]
               for agent, space in _observation_spaces(probe).items() if space is not None and agent not in masked)


def observation_lines(probe, *, conv_filters_given: bool = False) -> list:
    """What the first lines say was done to the observations: once per distinct line."""
    from rlhpc.envs.action_masks import first_line, masked_agents

    masked = masked_agents(probe)
    lines = [first_line(probe)] if masked else []
    for agent, space in _observation_spaces(probe).items():
        if space is None or agent in masked:
            continue
        said = observation_plan(space, conv_filters_given=conv_filters_given)[1]
        if said and said not in lines:
            lines.append(said)
    return [line for line in lines if line]
