"""The installed `rlhpc` command (`pip install -e .`): one command with subcommands over the code the scripts call.

    rlhpc train --algo PPO --env CartPole-v1 --num-cpus 35     # = python simple_example/simple_trainer.py ...
    rlhpc evaluate ~/ray_results/CartPole-v1 --episodes 10    # = python -m rlhpc.evaluate ...
    rlhpc compare ~/ray_results/one_core ~/ray_results/all_cores --x time
    rlhpc doctor                                              # the Slurm preflight (python -m rlhpc.doctor)

RLlib dropped its own `rllib train --run=... --env=...`; `rlhpc train` takes the trainer's flags, with --env and
--algo as the old command's names. The tutorial's scripts stay and run the same code.
"""

import importlib
import sys

# name -> (module whose main(argv) runs it, one line for the list)
COMMANDS = {
    "train": ("rlhpc.train.trainer", "train an agent (simple_example/simple_trainer.py's flags)"),
    "evaluate": ("rlhpc.outputs.evaluate", "play a checkpoint greedily, optionally to a video"),
    "compare": ("rlhpc.outputs.compare", "plot runs' returns in one figure, with a summary line each"),
    "doctor": ("rlhpc.slurm.doctor", "check a Slurm allocation (or a running Ray cluster) before training"),
}
TRAIN_DESCRIPTION = "Train an RLlib agent: `rlhpc train --env CartPole-v1 --algo PPO --num-cpus N`."


def usage() -> str:
    return "usage: rlhpc COMMAND [ARGS...] (rlhpc COMMAND --help)\n\n" + "\n".join(
        f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items())


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}: give one of {', '.join(COMMANDS)} (see rlhpc --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name == "train":
        return module.main(rest, description=TRAIN_DESCRIPTION, prog="rlhpc train")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
