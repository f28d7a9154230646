"""PettingZoo envs, the standard multi-agent API, trained as RLlib multi-agent envs: found by name, wrapped here.

    --name-env mpe2:simple_spread_v3              an env module: parallel_env(**env_config) (or env() for a
    --name-env pettingzoo.classic:tictactoe_v3    turn-based AEC game that has no parallel form)
    --name-env path/to/file.py:make_env           a function (env_config -> a PettingZoo env), for settings or
                                                  wrappers of your own

Parallel envs go through RLlib's ParallelPettingZooEnv, turn-based (AEC) ones through its PettingZooEnv (one agent
acts at a time; the others' rewards reach them on their next turn). The creators are module-level classes, so they
pickle by reference and build the env anew on every env runner, on every node; --env-config goes to the env's
constructor. PettingZoo is imported only when such an env is asked for (it is in the `envs` extra).
"""

import importlib
import types


def is_env_module(obj) -> bool:
    """A PettingZoo env module (mpe2.simple_spread_v3, pettingzoo.classic.tictactoe_v3): it builds envs."""
    return isinstance(obj, types.ModuleType) and (callable(getattr(obj, "parallel_env", None))
                                                  or callable(getattr(obj, "env", None)))


def is_pettingzoo_env(env) -> bool:
    """A PettingZoo ParallelEnv or AECEnv, wrappers included (found by its classes: no PettingZoo import needed)."""
    return any(cls.__module__.startswith("pettingzoo.") and cls.__name__ in ("ParallelEnv", "AECEnv")
               for cls in type(env).__mro__)


def to_rllib(env):
    """A PettingZoo env as an RLlib MultiAgentEnv."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv, PettingZooEnv

    is_parallel = any(cls.__name__ == "ParallelEnv" for cls in type(env).__mro__)
    return ParallelPettingZooEnv(env) if is_parallel else PettingZooEnv(env)


class EnvModuleCreator:
    """env_config -> the module's env, wrapped: its parallel form where it has one."""

    def __init__(self, module: str):
        self.module = module

    def __call__(self, env_config=None):
        built = importlib.import_module(self.module)
        make = getattr(built, "parallel_env", None) or built.env
        return to_rllib(make(**dict(env_config or {})))

    def __repr__(self) -> str:
        return f"EnvModuleCreator({self.module})"


class FactoryCreator:
    """env_config -> a user's function's PettingZoo env, wrapped."""

    def __init__(self, factory, takes_config: bool = True):
        self.env_creator = factory  # the name rlhpc.envs.sources reads to ship the user's module to every node
        self.takes_config = takes_config

    def __call__(self, env_config=None):
        return to_rllib(self.env_creator(env_config) if self.takes_config else self.env_creator())

    def __repr__(self) -> str:
        return f"FactoryCreator({getattr(self.env_creator, '__qualname__', self.env_creator)!r})"
