"""What --resume continues: which run, and with the settings it was started with.

Every run records the flags it was started with (rlhpc_run_spec.json, rlhpc.run.experiment). --resume parses
them again and lays the flags given now over them, so `--resume` alone (or with --name) is enough:
- where and on how much it runs (env runners, envs per runner, GPUs, the cluster, checkpoints) may change on
  any resume: a requeued job can get another allocation (an elastic resume);
- how long it trains (--stop-*) may change too: raised to train longer, lowered below what is done to end at once;
- what it trains (algorithm, env and env config, --set, seed, search) is the run's own: a
  resume that would change it is refused with the differences listed, unless --allow-changes, and then the
  run record keeps what changed (rlhpc.run.records.Change) and from which iteration (rlhpc.train.trainer writes it).

Why the recorded flags are parsed again rather than stored as settings: the record holds the command line (its
format is fixed, and runs recorded before keep only that), and only a command line says which flags were *given*
rather than left at their defaults; a flag given now overrides the run's, a default must not. argparse knows a
given flag only while it parses (given_flags), so both sides go through the parser, and what this module hands
on is settings: the merged namespace and the Change records.

Private API used: argparse's parser._actions (given_flags), the only list of a parser's flags with their defaults.
"""

import argparse
import os

from rlhpc.errors import UserError
from rlhpc.run import experiment
from rlhpc.run.cli import parse_assignments
from rlhpc.run.records import Change, RunRecord

# dest -> flag: what the run trains. Changing one on --resume needs --allow-changes.
RUN_SETTINGS = {
    "run": "--run", "name_env": "--name-env", "env_config": "--env-config", "set": "--set",
    "framework": "--framework", "policies": "--policies", "seed": "--seed", "seeds": "--seeds", "grid": "--grid",
    "uniform": "--uniform", "loguniform": "--loguniform",
    "num_samples": "--num-samples", "metric": "--metric", "mode": "--mode", "stop_on": "--stop-on",
    "scheduler": "--scheduler", "grace_period": "--grace-period", "reduction_factor": "--reduction-factor",
    "perturbation_interval": "--perturbation-interval", "search": "--search", "max_concurrent": "--max-concurrent",
    "eval_interval": "--eval-interval", "eval_episodes": "--eval-episodes", "normalize_obs": "--normalize-obs",
    "anneal_lr": "--anneal-lr", "scale_rewards": "--scale-rewards",
}
# dest -> flag: how long it trains. "Train it longer" is the most common reason to resume: allowed, recorded.
HOW_LONG = {"stop_reward": "--stop-reward", "stop_iters": "--stop-iters", "stop_timesteps": "--stop-timesteps",
            "stop_time": "--stop-time"}
KEY_VALUE = {"set": "--set", "env_config": "--env-config"}  # merged key by key
# Always this command's: the cluster of this job (the sbatch templates export its address) and its token,
# and what only says how to resume or how this command reports.
THIS_COMMAND = {"address", "redis_password", "resume", "allow_changes", "print_config", "as_test"}


def stop_changed(changes) -> bool:
    """Whether a resume's changes give the run new stop criteria (which then replace those it saved)."""
    return any(change.flag.startswith("--stop") for change in changes)


def find_run(args, default_name: str) -> str:
    """The experiment dir --resume continues: the one given, else the run of that name. Several runs with one
    name (started side by side, experiment.claim): the one this Slurm job started, else a list to pick from."""
    if isinstance(args.resume, str):
        return os.path.abspath(os.path.expanduser(args.resume))
    name = args.name or default_name
    runs = experiment.runs_named(args.storage_path, name)
    if len(runs) < 2:  # none: rlhpc.run.experiment.find_resume says there is nothing to resume
        return runs[0] if runs else experiment.experiment_dir(args.storage_path, name)
    job = experiment.slurm_job()
    mine = [run for run in runs if job and job in started_or_resumed_by(experiment.read_record(run))]
    if len(mine) == 1:
        print(f"resuming {mine[0]}: of the {len(runs)} runs named {name}, the one this Slurm job ({job}) started",
              flush=True)
        return mine[0]
    listing = "; ".join(describe(run) for run in runs)
    raise UserError(f"--resume: {len(runs)} runs are named {name}: {listing}. Pick one with --resume DIR")


def started_or_resumed_by(record: RunRecord | None) -> set:
    """The Slurm jobs that trained a run (a chain started by a resume by hand is that resume's job)."""
    return record.slurm_jobs() if record else {None}


def describe(run_dir: str) -> str:
    record = experiment.read_record(run_dir)
    facts = [f"started {record.started}" if record and record.started else None,
             f"Slurm job {record.slurm_job}" if record and record.slurm_job else None,
             f"iteration {experiment.last_iteration(run_dir)}"]
    return f"{run_dir} ({', '.join(fact for fact in facts if fact)})"


def given_flags(make_parser, flags) -> set:
    """The dests of the flags on this command line (not those that only have their default)."""
    parser = make_parser()
    for action in parser._actions:  # (not set_defaults: it also puts its values in the namespace)
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(flags)))


def settings(args, flags, make_parser, default_name: str) -> tuple:
    """-> (the resumed run's args, changes): the recorded flags with the ones given now laid over them.

    changes: Change each; those that change what the run trains are refused unless --allow-changes.
    A run from before runs recorded their flags resumes with the flags as given (as it always did).
    """
    run_dir = find_run(args, default_name)
    record = experiment.read_record(run_dir) if os.path.isdir(run_dir) else None
    if record is None or record.flags is None:
        return argparse.Namespace(**{**vars(args), "resume": run_dir}), []
    path = os.path.join(run_dir, experiment.RUN_SPEC_FILE)
    current = vars(parse_recorded(make_parser, list(record.flags), path))
    if "anneal_lr_until" not in record.spec:  # a run from before --anneal-lr: it trained, and resumes, at a constant lr
        current["anneal_lr"] = "off"
    # As it resolved when it started (auto may resolve otherwise in a later version); a run from before: without.
    current["scale_rewards"] = "on" if record.spec.get("scale_rewards") else "off"
    # The run's settings now: as started, with what earlier resumes changed.
    for earlier in record.resumes:
        if earlier.flags is not None:
            current, _ = overlay(current, parse_recorded(make_parser, list(earlier.flags), path),
                                 given_flags(make_parser, list(earlier.flags)))
    current["storage_path"] = record.storage_path or current["storage_path"]  # absolute, as resolved
    merged, changes = overlay(current, args, given_flags(make_parser, flags))
    merged["resume"] = run_dir
    refused = [c for c in changes if c.trains]
    if refused and not args.allow_changes:
        raise UserError(f"--resume would change what {run_dir} trains: {listing(refused)} (its settings: "
                        f"{os.path.join(run_dir, experiment.RUN_SPEC_FILE)}; add --allow-changes to resume with "
                        "them, and the run records what changed)")
    return argparse.Namespace(**merged), changes


def overlay(current: dict, args, given: set) -> tuple:
    """The flags given on a command line (args; given: their dests) laid over a run's settings -> (merged,
    changes). The cluster's address and the token are always the new command's."""
    merged, changes = {}, []
    for dest, now in vars(args).items():
        before = current.get(dest)
        if dest in THIS_COMMAND or dest not in given:
            merged[dest] = now if dest in THIS_COMMAND else before
        elif dest in KEY_VALUE:
            merged[dest], changed = merge_assignments(before or [], now, KEY_VALUE[dest])
            changes += changed
        else:
            merged[dest] = now
            if now != before:
                changes.append(Change(RUN_SETTINGS.get(dest) or HOW_LONG.get(dest) or "--" + dest.replace("_", "-"),
                                      before, now,
                                      trains=dest in RUN_SETTINGS))
    return merged, changes


def parse_recorded(make_parser, flags: list, path: str):
    """Recorded flags parsed again; a flag this version no longer knows is one line naming the record."""
    parser = make_parser()

    def error(message):
        raise UserError(f"cannot read the flags recorded in {path}: {message}")

    parser.error = error
    return parser.parse_args(flags)


def merge_assignments(recorded: list, given: list, flag: str) -> tuple:
    """KEY=VALUE lists: the recorded ones, each key given now replacing its own -> (merged, changes)."""
    old = {".".join(path): value for path, value in parse_assignments(recorded, flag)}
    new = {".".join(path): value for path, value in parse_assignments(given, flag)}
    from rlhpc.run.algorithms import PLACEMENT_KEYS  # --set num_env_runners=... says where, not what

    changes = [Change(f"{flag} {key}", old.get(key), value, trains=flag == "--env-config" or key not in PLACEMENT_KEYS)
               for key, value in new.items() if key not in old or old[key] != value]
    kept = [item for item in recorded if item.partition("=")[0].strip() not in new]
    return kept + list(given), changes


def listing(changes: list) -> str:
    return ", ".join(change.shown() for change in changes)
