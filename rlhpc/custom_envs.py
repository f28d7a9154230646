"""Registering users' own envs so that every node of a cluster can build them.

The tutorial's `register_env(name, lambda config: MyEnv(config))` works only where the module
defining MyEnv can be imported. On a cluster, env runners on other nodes cannot import a script
that sits next to the driver, so the env's module is shipped with the env creator (pickled by
value). Old-`gym`-API envs are adapted once, here on the driver, with one warning.
"""

import sys

from rlhpc.config import cannot_create_env, env_config_from
from rlhpc.errors import UserError


def register_envs(envs: dict, args) -> None:
    from ray import cloudpickle
    from ray.tune.registry import register_env

    from rlhpc.gym_compat import AdaptedEnvCreator, check_and_adapt

    env_config = env_config_from(args)
    for name, env_class in envs.items():
        module = sys.modules.get(getattr(env_class, "__module__", ""))
        if module is not None and module.__name__ != "__main__" and not module.__name__.startswith("rlhpc"):
            cloudpickle.register_pickle_by_value(module)
        if name == args.name_env:
            # Built once now: a bad --env-config or an old-API env is found before Ray starts.
            try:
                creator = check_and_adapt(env_class, env_config)
            except (ValueError, TypeError, KeyError) as e:
                raise UserError(f"bad --env-config for {name}: {e}") from None
            except Exception as e:  # noqa: BLE001 -- the env's own bug: one line here, not a traceback
                raise cannot_create_env(name, e) from None
        else:
            creator = AdaptedEnvCreator(env_class)
        register_env(name, creator)
