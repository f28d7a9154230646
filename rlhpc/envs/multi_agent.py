"""Multi-agent envs (RLlib's MultiAgentEnv): which policy each agent trains, decided before Ray starts.

`--policies` says it:

    shared              one policy for every agent (the default; the agents must have the same spaces)
    per-agent           one policy per agent, named after the agent
    module:function     function(agent_id, episode=None) -> policy id, from a module or path/to/file.py;
                        if the module has POLICIES = [...], every id must be one of them

`resolve` turns it into a mapping agent -> policy over the env's `possible_agents` (the driver built the env
once, rlhpc.envs.sources) and checks that the agents sharing a policy see and act in the same spaces; the run records
the mapping (rlhpc.run.spec), so evaluate plays each agent with its own policy. `AgentToPolicy` is the mapping as
RLlib's policy_mapping_fn: plain data, so it pickles to every node.
"""

import dataclasses

from rlhpc.errors import UserError

SHARED, PER_AGENT = "shared", "per-agent"
SHARED_POLICY = "shared"  # the one policy's id under --policies shared


@dataclasses.dataclass(frozen=True)
class AgentToPolicy:
    """RLlib's policy_mapping_fn: agent id -> policy id, from a fixed table."""

    table: tuple  # ((agent, policy), ...)

    def __call__(self, agent_id, episode=None, **kwargs):
        return dict(self.table)[agent_id]


def _same_spaces(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1]


def _describe(spaces: tuple) -> str:
    return f"{spaces[0]} -> {spaces[1]}"


def _from_function(asked: str, agents: list) -> dict:
    from rlhpc.envs.sources import import_module

    where, _, attribute = asked.rpartition(":")
    try:
        module = import_module(where, asked)
    except UserError as e:
        raise UserError(f"--policies {asked}: {e}".replace(f" for env {asked!r}", "")) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserError(f"--policies {asked}: {where} has no function {attribute!r}")
    known = getattr(module, "POLICIES", None)
    mapping = {}
    for agent in agents:
        try:
            policy = function(agent, None)
        except Exception as e:  # noqa: BLE001 -- the user's function: its failure, in one line
            raise UserError(f"--policies {asked}: {attribute}({agent!r}) raised {type(e).__name__}: {e}") from None
        if not isinstance(policy, str) or not policy:
            raise UserError(f"--policies {asked}: {attribute}({agent!r}) returned {policy!r}, not a policy id (a str)")
        if known is not None and policy not in known:
            raise UserError(f"--policies {asked}: {attribute}({agent!r}) names the unknown policy {policy!r} "
                            f"(POLICIES in {where}: {', '.join(map(str, known))})")
        mapping[agent] = policy
    return mapping


def resolve(asked: str | None, spaces: dict, env_name: str) -> tuple:
    """--policies and the env's {agent: spaces} -> (mapping agent -> policy, why: for the first line)."""
    agents = list(spaces)
    asked = asked or SHARED
    if asked == SHARED:
        mapping = dict.fromkeys(agents, SHARED_POLICY)
    elif asked == PER_AGENT:
        mapping = {agent: str(agent) for agent in agents}
    elif ":" in asked:
        mapping = _from_function(asked, agents)
    else:
        raise UserError(f"--policies {asked}: give shared, per-agent or module:function")
    by_policy: dict[str, list] = {}
    for agent, policy in mapping.items():
        by_policy.setdefault(policy, []).append(agent)
    for policy, members in by_policy.items():
        first = members[0]
        for other in members[1:]:
            if not _same_spaces(spaces[first], spaces[other]):
                fix = "give --policies per-agent or a mapping module:function" if asked == SHARED else \
                    "map agents with other spaces to other policies"
                raise UserError(f"--policies {asked}: agents {first} and {other} of {env_name} share policy "
                                f"{policy!r} but their spaces differ ({_describe(spaces[first])} vs "
                                f"{_describe(spaces[other])}): {fix}")
    why = (f"one shared policy for {len(agents)} agents" if asked == SHARED else
           f"{len(by_policy)} policies for {len(agents)} agents ({asked})")
    return mapping, why


def not_multi_agent(asked: str | None, env_name: str) -> None:
    if asked:
        raise UserError(f"--policies is for multi-agent envs (RLlib MultiAgentEnv); {env_name} has one agent")


def policy_returns(episode, chunks=()) -> dict:
    """{policy: its agents' summed return} of a finished multi-agent episode (and its earlier chunks)."""
    returns: dict[str, float] = {}
    for part in (episode, *chunks):
        for agent_episode in (getattr(part, "agent_episodes", None) or {}).values():
            policy = agent_episode.module_id
            returns[policy] = returns.get(policy, 0.0) + float(agent_episode.get_return())
    return returns
