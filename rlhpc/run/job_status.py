"""How a run ended, as the trainer tells the Slurm job that runs it: the endings and the status file (no Ray).

The trainer writes the file named by RLHPC_STATUS_FILE (slurm/ray_cluster.sh sets it) when it starts and when it
ends; rlhpc.slurm.job reads it to decide whether the job requeues itself and which run the next job resumes.
"""

import dataclasses
import json

RUNNING = "running"  # written when training starts: a job that finds it, the trainer died before saying more
DONE = "done"  # every trial met a stop criterion
STOPPED = "stopped"  # by a signal before that, with a checkpoint: the only ending the next job of a chain resumes
FAILED = "failed"  # a trial raised
ENDINGS = (RUNNING, DONE, STOPPED, FAILED)


@dataclasses.dataclass(frozen=True)
class Status:
    experiment: str  # the run's experiment dir
    ending: str  # one of ENDINGS
    iteration: int  # the last training iteration the run recorded

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def read(path: str) -> Status | None:
    """The status the trainer left at path; None when there is none (no file, empty, or not the trainer's JSON)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return Status(experiment=str(data["experiment"]), ending=str(data["ending"]),
                      iteration=int(data.get("iteration") or 0))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
