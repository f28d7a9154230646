"""Finding and building envs, the same for the trainer and for evaluate.

An env is named in one of these ways (`--name-env`):

    CartPole-v1                       a Gymnasium id
    my_package.envs:MyEnv-v0          Gymnasium's syntax: import the module (it registers the id), then make
    path/to/my_env.py:MyEnv           a class (or env_config -> env function) in a file
    my_package.envs:MyEnv             the same from an importable module
    BasicEnv                          a name a trainer script hands to rlhpc.train.trainer.main(envs={...}), or one
                                      given to ray.tune.registry.register_env before main() runs

`find` turns the name into an EnvSource: where the env comes from, as data a run records (rlhpc.run.experiment),
so evaluate rebuilds the same env later without being told again. `probe` builds it once on the driver, so a
typo or a bad env_config fails before Ray starts; old-`gym`-API classes are adapted there (rlhpc.envs.gym_compat).
`register_with_ray` ships a class's module to every node (pickled by value: env runners on other nodes cannot
import a script that sits next to the driver).

Private API used: Tune's `ray.tune.registry._global_registry` (find), the only reader of the names given to
register_env (Tune has register_env, and a getter only for trainables).
"""

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlhpc.envs import pettingzoo
from rlhpc.errors import UserError
from rlhpc.errors import warn as default_warn

if TYPE_CHECKING:
    from gymnasium.envs.registration import EnvSpec

GYMNASIUM, CLASS, REGISTERED = "gymnasium", "class", "registered"


@dataclasses.dataclass(frozen=True)
class EnvSource:
    """Where an env comes from. `name` is what RLlib's config gets (a Gymnasium id or a register_env name)."""

    name: str
    kind: str  # GYMNASIUM, CLASS (a class or creator function in `module`), REGISTERED (register_env by the user)
    module: str | None = None  # an importable module name or an absolute path to a .py file
    attribute: str | None = None  # the class in it (CLASS), or the Gymnasium id it registers (GYMNASIUM)

    @property
    def label(self) -> str:
        """A short name for dirs: the class for path/to/file.py:Class, else the name as given."""
        return self.attribute if self.kind == CLASS and self.attribute else self.name

    def record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "EnvSource":
        fields: dict[str, Any] = {f.name: record.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Probe:
    """What building the env once told us."""

    spec: "EnvSpec | None"  # the Gymnasium EnvSpec (reward_threshold), None for classes
    observation_space: object
    action_space: object
    creator: Callable | None  # env_config -> env, for register_env (None: Gymnasium makes it)
    step_seconds: float | None = None  # the mean wall time of one step, when timed
    steps_timed: int = 0
    agent_spaces: dict | None = None  # a multi-agent env's {agent: (observation space, action space)}

    @property
    def multi_agent(self) -> bool:
        return self.agent_spaces is not None


TIMING_STEPS, TIMING_BUDGET_S = 20, 0.3  # a few dozen steps at most, a fraction of a second


def time_steps(env) -> tuple:
    """-> (mean seconds per step, steps timed) over random actions; (None, 0) if the env cannot be stepped so."""
    import time

    from rlhpc.envs.action_masks import random_action
    from rlhpc.envs.gym_compat import is_multi_agent

    def sample(obs):  # a multi-agent env takes an action for each agent that has an observation
        if is_multi_agent(env):
            return {agent: random_action(env.get_action_space(agent), o) for agent, o in obs.items()}
        return random_action(env.action_space, obs)

    def ended(flag):
        return flag.get("__all__", False) if isinstance(flag, dict) else flag

    try:
        obs = env.reset(seed=0)
        obs = obs[0] if isinstance(obs, tuple) else obs
        took, steps = 0.0, 0
        while steps < TIMING_STEPS and took < TIMING_BUDGET_S:
            action = sample(obs)
            started = time.perf_counter()
            out = env.step(action)
            took += time.perf_counter() - started
            steps += 1
            obs = out[0]
            if ended(out[2]) or (len(out) == 5 and ended(out[3])):  # terminated or truncated (old gym: done)
                obs = env.reset()
                obs = obs[0] if isinstance(obs, tuple) else obs
    except Exception:  # noqa: BLE001 -- an env that refuses random actions is still trainable: just not timed
        return None, 0
    return took / steps, steps


def agent_spaces(env) -> dict:
    """{agent: (observation space, action space)} over the env's possible agents."""
    agents = list(getattr(env, "possible_agents", None) or getattr(env, "agents", None) or [])
    if not agents:
        raise UserError(f"{type(env).__name__} is a MultiAgentEnv without possible_agents: set "
                        "self.possible_agents (and self.agents) in its __init__")
    spaces = {}
    for agent in agents:
        try:
            spaces[agent] = (env.get_observation_space(agent), env.get_action_space(agent))
        except (KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{type(env).__name__} gives no spaces for agent {agent!r} ({type(e).__name__}: {e}): "
                            "set self.observation_spaces and self.action_spaces, dicts by agent") from None
    return spaces


def _look(env, timed: bool, warn, check: bool = True) -> dict:
    """The env's spaces, and its step time when `timed`; a single-agent env is also stepped and checked
    (rlhpc.envs.checks), so that its bugs are one line now rather than a riddle from RLlib later."""
    from rlhpc.envs import checks
    from rlhpc.envs.gym_compat import is_multi_agent, to_gymnasium_space

    seen: dict = {}
    if is_multi_agent(env):  # spaces by agent; the env-wide ones are None or a Dict of them
        seen["agent_spaces"] = agent_spaces(env)
    for kind in ("observation_space", "action_space"):
        space = getattr(env, kind, None)
        try:
            seen[kind] = to_gymnasium_space(space)
        except TypeError:  # not a space we know (None for RLlib's MultiAgentEnv): as it is
            seen[kind] = space
    if is_multi_agent(env) or not check:  # a Gymnasium id has Gymnasium's own env checker
        seen["step_seconds"], seen["steps_timed"] = time_steps(env) if timed else (None, 0)
        return seen
    step_seconds, steps = checks.walk(env, warn or default_warn)
    seen["step_seconds"], seen["steps_timed"] = (step_seconds, steps) if timed and steps else (None, 0)
    return seen


def bad_env_config(name: str, error: Exception) -> UserError:
    return UserError(f"bad --env-config for {name}: {error}")


def cannot_create_env(name: str, error: Exception) -> UserError:
    """The env's own failure to build (a missing extra, a bug in a custom env) as one line."""
    return UserError(f"cannot create env {name!r}: {type(error).__name__}: {error}")


def import_module(where: str, name: str):
    """'path/file.py' or 'package.module' -> the imported module (a file keeps its stem as module name, in
    sys.modules, so that cloudpickle can ship it by value)."""
    try:
        if where.endswith(".py"):
            file = os.path.realpath(os.path.expanduser(where))
            stem = os.path.splitext(os.path.basename(file))[0]
            loaded = sys.modules.get(stem)
            if loaded is not None and os.path.realpath(getattr(loaded, "__file__", "") or "") == file:
                return loaded
            spec = importlib.util.spec_from_file_location(stem, file)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python file: {file}")
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, os.path.dirname(file))  # for its own imports of neighbouring files
            sys.modules[stem] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(stem, None)
                raise
            return module
        return importlib.import_module(where)
    except (ImportError, OSError, SyntaxError) as e:
        raise UserError(f"cannot import {where!r} for env {name!r}: {e} (is it on PYTHONPATH?)") from None


def _file_of(obj) -> str | None:
    try:
        path = inspect.getsourcefile(obj)
    except (TypeError, OSError):
        return None
    return os.path.realpath(path) if path else None


def _gymnasium_spec(env_id: str, name: str):
    import gymnasium

    try:
        return gymnasium.spec(env_id)
    except gymnasium.error.Error as e:
        raise UserError(f"unknown env {name!r}: {e}") from None


def find(name: str, known: dict | None = None, *, ray_registry: bool = False):
    """-> (EnvSource, creator or None). `known`: {name: class} from a trainer script; `ray_registry`: also
    look among the names given to register_env (the trainer; evaluate runs without Ray)."""
    if known and name in known:
        creator = known[name]
        return EnvSource(name, CLASS, _file_of(creator), getattr(creator, "__qualname__", None)), creator
    if ray_registry:
        from ray.tune.registry import ENV_CREATOR, _global_registry

        if _global_registry.contains(ENV_CREATOR, name):
            registered = _global_registry.get(ENV_CREATOR, name)
            if not isinstance(registered, _guarded_creator_class()):  # ours (an earlier run in this process): not
                return EnvSource(name, REGISTERED), registered       # the user's registration
    where, _, attribute = name.rpartition(":")
    if not where:
        _gymnasium_spec(name, name)
        return EnvSource(name, GYMNASIUM), None
    module = import_module(where, name)
    found = _attribute_or_submodule(module, where, attribute)
    if pettingzoo.is_env_module(found):  # mpe2:simple_spread_v3, pettingzoo.classic:tictactoe_v3
        return EnvSource(name, CLASS, where, attribute), pettingzoo.EnvModuleCreator(found.__name__)
    if callable(found):
        # A class in a file: recorded by its absolute path, so evaluate finds it from anywhere.
        origin = os.path.realpath(os.path.expanduser(where)) if where.endswith(".py") else where
        return EnvSource(name, CLASS, origin, attribute), found
    _gymnasium_spec(attribute, name)  # importing the module registered the id, or the id is unknown
    return EnvSource(name, GYMNASIUM, where, attribute), None


def _attribute_or_submodule(module, where: str, attribute: str):
    """module.attribute, or the submodule of that name (a PettingZoo package exports its envs as submodules that
    it does not import itself: mpe2.simple_spread_v3)."""
    found = getattr(module, attribute, None)
    if found is None and not where.endswith(".py") and attribute.isidentifier():
        try:
            found = importlib.import_module(f"{where}.{attribute}")
        except ImportError:
            return None
    return found


def load(source: EnvSource):
    """The creator a recorded EnvSource names (evaluate): imports its module again."""
    if source.kind == GYMNASIUM:
        if source.module:
            import_module(source.module, source.name)
        return None
    if source.kind != CLASS or not source.module:
        raise UserError(f"the env {source.name!r} was registered by the training script itself; give "
                        "--name-env path/to/file.py:ClassName")
    creator = _attribute_or_submodule(import_module(source.module, source.name), source.module, source.attribute or "")
    if pettingzoo.is_env_module(creator):
        return pettingzoo.EnvModuleCreator(creator.__name__)
    if not callable(creator):
        raise UserError(f"{source.module} has no {source.attribute!r} any more (env {source.name!r}): "
                        "give --name-env path/to/file.py:ClassName")
    return creator


def gymnasium_id(source: EnvSource) -> str:
    return source.attribute if source.kind == GYMNASIUM and source.module and source.attribute else source.name


def probe(source: EnvSource, creator, env_config: dict, *, warn=None, timed: bool = False) -> Probe:
    """Builds the env once with env_config, reads its spaces (and, when `timed`, the time a step takes) and
    closes it; errors are one line."""
    import gymnasium

    spec, seen = None, {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if source.kind == GYMNASIUM:
                spec = gymnasium.spec(gymnasium_id(source))
                env = gymnasium.make(source.name, **env_config)
            elif source.kind == REGISTERED:
                from ray.rllib.env.env_context import EnvContext

                env = creator(EnvContext(env_config, worker_index=0))
            else:
                from rlhpc.envs.gym_compat import check_and_adapt

                creator = check_and_adapt(creator, env_config, warn=warn,
                                          on_built=lambda built: seen.update(_look(built, timed, warn)))
                env = None  # built, looked at and closed by check_and_adapt
    except UserError:
        raise
    except TypeError as e:  # an unknown keyword from --env-config
        raise bad_env_config(source.name, e) from None
    except (ValueError, KeyError) as e:
        if source.kind == GYMNASIUM:
            raise cannot_create_env(source.name, e) from None
        raise bad_env_config(source.name, e) from None
    except Exception as e:  # noqa: BLE001 -- the env's own bug or a missing extra (box2d, mujoco): one line
        raise cannot_create_env(source.name, e) from None
    if env is not None:
        try:
            seen = _look(env, timed, warn, check=False)
        finally:
            if hasattr(env, "close"):
                env.close()
    return Probe(spec, creator=None if source.kind == GYMNASIUM else creator, **seen)


def register_with_ray(source: EnvSource, probed: Probe, step_timeout_s: float, num_envs: int | None = None,
                      guard: bool = True) -> None:
    """Makes the env buildable on every node, each copy in a guard (rlhpc.envs.guard) with its identity: a class's
    module travels with the creator; a Gymnasium id is made by gymnasium.make in the guard. guard=False: RLlib's
    legacy stack (tf2), which builds its envs itself. Names given to register_env are the user's registration."""
    if source.kind == REGISTERED or (source.kind == GYMNASIUM and not guard):
        return
    from ray import cloudpickle
    from ray.tune.registry import register_env

    from rlhpc.envs.guard import GuardedCreator

    if source.kind == GYMNASIUM:
        build: Callable = GymnasiumMaker(source.name)
    else:
        assert probed.creator is not None, "a class's probe keeps its creator"
        build = probed.creator
    original = getattr(build, "env_creator", build)  # the user's own class or function inside our adapters
    module = sys.modules.get(getattr(original, "__module__", ""))
    if module is not None and module.__name__ != "__main__" and not module.__name__.startswith("rlhpc"):
        cloudpickle.register_pickle_by_value(module)
    spaces = None if probed.multi_agent else (probed.observation_space, probed.action_space)
    register_env(source.name, GuardedCreator(build, step_timeout_s, num_envs, spaces) if guard else build)


def _guarded_creator_class():
    from rlhpc.envs.guard import GuardedCreator

    return GuardedCreator


class GymnasiumMaker:
    """env_config -> gymnasium.make(name, **env_config), as RLlib makes a Gymnasium id (`module:Id-v0` imports the
    module that registers it, in whichever process the copy is built)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, env_config):
        import gymnasium

        return gymnasium.make(self.name, **env_config)

    def __repr__(self) -> str:
        return f"GymnasiumMaker({self.name!r})"


def make(source: EnvSource, creator, env_config: dict, render_mode=None):
    """A new env to play in (evaluate), rendering in render_mode when given."""
    import gymnasium

    name = source.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if source.kind == GYMNASIUM:
                return gymnasium.make(gymnasium_id(source), render_mode=render_mode, **env_config)
            from rlhpc.envs.gym_compat import check_and_adapt

            try:
                adapted = check_and_adapt(creator, dict(env_config), warn=lambda text: None)
            except (ValueError, TypeError, KeyError) as e:
                raise UserError(f"bad env_config for {name}: {e}") from None
            env = adapted(dict(env_config))
    except UserError:
        raise
    except TypeError as e:  # an unknown keyword in env_config
        raise UserError(f"bad env_config for {name}: {e}") from None
    except gymnasium.error.Error as e:
        raise UserError(f"cannot create env {name!r}: {e}") from None
    if render_mode:
        modes = (getattr(env, "metadata", None) or {}).get("render_modes", [])
        if render_mode not in modes:
            raise UserError(f"{name} cannot render {render_mode!r} (its metadata lists render_modes {modes})")
        env.render_mode = render_mode
    return env
