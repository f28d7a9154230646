"""Experiment files: `--config-file exp.yaml` holds a run's flags and config overrides, as rl-baselines3-zoo keeps
its hyperparameters.

    # flags by their long names (dashes or underscores), then config overrides (as --set) and env_config
    name_env: CartPole-v1
    num_cpus: 4
    stop_reward: 450
    set:
      lr: 0.001
      model_config.fcnet_hiddens: [64, 64]
    env_config: {}

A file can instead hold one entry per env (top-level keys are env names, as the zoo's files): the entry for
--name-env is used (or the only one). `expand` turns the file into flags placed before the command line's, so
a flag given on the command line wins and every check of the trainer's flags applies to the file's too; an
unknown key is one line. The run records the expanded flags (what --resume parses again) and the file
(rlhpc.run.records.ConfigFile: its path, the entry used, its text).

Why the file becomes flags rather than settings laid over the parsed ones: argparse applies each flag's type and
choices checks (and their error lines) only to a command line, and the run record keeps the command line that
--resume reads again (rlhpc.run.resume says why that one is parsed again too).

Private API used: argparse's parser._actions (flag_names), the only list of a parser's flags and their kinds.
"""

import difflib
import json
import os

from rlhpc.errors import UserError
from rlhpc.run.records import ConfigFile

FLAG = "--config-file"
KEY_VALUE_FLAGS = {"set", "env_config"}  # {key: value} -> --set key=value ...
RANGE_FLAGS = {"uniform", "loguniform"}  # {key: [low, high]} -> --uniform key=low,high
LIST_FLAGS = {"grid"}  # {key: [v1, v2]} -> --grid key=[v1,v2]


def split(flags: list) -> tuple:
    """-> (the file's path or None, the flags without --config-file); a second --config-file is an error."""
    path, rest, i = None, [], 0
    while i < len(flags):
        flag = flags[i]
        if flag == FLAG or flag.startswith(FLAG + "="):
            if path is not None:
                raise UserError(f"{FLAG} given twice: put both files' settings in one")
            if flag == FLAG:
                if i + 1 >= len(flags):
                    raise UserError(f"{FLAG} needs a file: {FLAG} exp.yaml")
                path, i = flags[i + 1], i + 2
            else:
                path, i = flag.partition("=")[2], i + 1
            continue
        rest.append(flag)
        i += 1
    return path, rest


def read(path: str):
    import yaml

    try:
        with open(os.path.expanduser(path)) as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"{FLAG} {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise UserError(f"{FLAG} {path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{FLAG} {path}: expected KEY: VALUE lines (a mapping), got a {type(data).__name__}")
    return text, data


def flag_names(parser) -> dict:
    """dest -> the action, for the flags a file may set (not --config-file itself, not --help); a flag's own
    action before its hidden aliases (--env for --name-env)."""
    known: dict = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "config_file"):
            known.setdefault(action.dest, action)
    return known


def entry_for(data: dict, known: dict, name_env: str | None, path: str) -> tuple:
    """A flat file, or the entry of a per-env file -> (its settings, the env it was picked for or None)."""
    keys = [str(k).replace("-", "_") for k in data]
    if not data or any(k in known for k in keys) or not all(isinstance(v, dict) for v in data.values()):
        return data, None
    if name_env is not None:
        if name_env not in data:
            raise UserError(f"{FLAG} {path} has no entry for {name_env} (it has {', '.join(map(str, data))})")
        return data[name_env], name_env
    if len(data) == 1:
        [(env, entry)] = data.items()
        return entry, str(env)
    raise UserError(f"{FLAG} {path} holds entries for {', '.join(map(str, data))}: pick one with --name-env")


def as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def to_flags(settings: dict, known: dict, path: str) -> list:  # noqa: C901 -- a branch per kind of flag
    flags = []
    for raw_key, value in settings.items():
        key = str(raw_key).replace("-", "_")
        action = known.get(key)
        if action is None:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"{FLAG} {path}: unknown key {raw_key!r}{hint}; keys are the trainer's flags "
                            "(see --help) and set: / env_config: for config overrides")
        option = action.option_strings[-1]  # the long name
        if key in KEY_VALUE_FLAGS | RANGE_FLAGS | LIST_FLAGS:
            if not isinstance(value, dict):
                raise UserError(f"{FLAG} {path}: {raw_key} takes KEY: VALUE lines, got {value!r}")
            for name, item in value.items():
                if key in RANGE_FLAGS:
                    if not isinstance(item, list) or len(item) != 2:
                        raise UserError(f"{FLAG} {path}: {raw_key}.{name} takes [low, high], got {item!r}")
                    text = f"{as_text(item[0])},{as_text(item[1])}"
                else:
                    text = json.dumps(item) if key in LIST_FLAGS else as_text(item)
                flags += [option, f"{name}={text}"]
        elif action.nargs == 0:  # store_true
            if not isinstance(value, bool):
                raise UserError(f"{FLAG} {path}: {raw_key} takes true or false, got {value!r}")
            if value:
                flags.append(option)
        elif isinstance(value, (dict, list)):
            raise UserError(f"{FLAG} {path}: {raw_key} takes one value, got {value!r}")
        elif value is True and action.nargs == "?":  # --resume: true
            flags.append(option)
        else:
            flags += [option, as_text(value)]
    return flags


def expand(flags: list, parser) -> tuple:
    """The command line -> (flags with the file's settings first, the file as a ConfigFile or None)."""
    path, rest = split(flags)
    if path is None:
        return list(flags), None
    text, data = read(path)
    known = flag_names(parser)
    given_env = parser.parse_known_args(rest)[0].name_env if any(
        f in rest or any(r.startswith(f + "=") for r in rest) for f in ("--name-env", "--env")) else None
    settings, env = entry_for(data, known, given_env, path)
    expanded = to_flags(settings, known, path)
    if env is not None and given_env is None:
        expanded = ["--name-env", env, *expanded]
    return expanded + rest, ConfigFile(path=os.path.abspath(os.path.expanduser(path)), entry=env, text=text)
