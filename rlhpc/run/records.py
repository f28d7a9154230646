"""What a run keeps about itself, as typed records, and their JSON form: the one place either is turned into the other.

    RunRecord      rlhpc_run_spec.json: the resolved spec (RunSpec.record()) that started the run, the name asked for,
                   when and in which Slurm job it started, and one ResumeEntry per --resume
    ResumeEntry    one --resume: when, which job, from which iteration, the flags given, what they changed
    Change         one setting a --resume changed: {"flag", "from", "to", "trains"}
    ConfigFile     the experiment file (--config-file) a run's flags came from: {"path", "entry", "text"}

rlhpc.run.experiment reads and writes the file; the keys here are the file's, so records written before these
classes existed read as they are (a key a record lacks reads as its default).
"""

import dataclasses
import json
from types import MappingProxyType


@dataclasses.dataclass(frozen=True)
class Change:
    """One setting a --resume changed. trains: part of what the run trains (refused without --allow-changes)."""

    flag: str  # "--num-cpus", or "--set lr" for one key of a KEY=VALUE flag
    before: object
    after: object
    trains: bool

    def to_json(self) -> dict:
        return {"flag": self.flag, "from": self.before, "to": self.after, "trains": self.trains}

    @classmethod
    def from_json(cls, data: dict) -> "Change":
        return cls(flag=data["flag"], before=data.get("from"), after=data.get("to"), trains=bool(data.get("trains")))

    def shown(self) -> str:
        """"--set lr 0.0005 -> 0.001", as the refusal lists it."""
        def text(value):
            return "(unset)" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)

        return f"{self.flag} {text(self.before)} -> {text(self.after)}"


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """The experiment file among a run's flags: where it was, the entry used (per-env files), and its text."""

    path: str
    entry: str | None  # the env whose entry was used; None for a flat file
    text: str

    def to_json(self) -> dict:
        return {"path": self.path, "entry": self.entry, "text": self.text}

    @classmethod
    def from_json(cls, data: dict) -> "ConfigFile":
        return cls(path=data["path"], entry=data.get("entry"), text=data.get("text", ""))


@dataclasses.dataclass(frozen=True)
class ResumeEntry:
    """One --resume of a run, as its record keeps it."""

    at: str | None  # "%Y-%m-%d %H:%M:%S"
    slurm_job: str | None
    from_iteration: int | None
    flags: tuple | None  # the command line given (None: not recorded), laid over the run's on later resumes
    changes: tuple = ()  # Change each

    def to_json(self) -> dict:
        return {"at": self.at, "slurm_job": self.slurm_job, "from_iteration": self.from_iteration,
                "flags": None if self.flags is None else list(self.flags),
                "changes": [change.to_json() for change in self.changes]}

    @classmethod
    def from_json(cls, data: dict) -> "ResumeEntry":
        flags = data.get("flags")
        return cls(at=data.get("at"), slurm_job=data.get("slurm_job"), from_iteration=data.get("from_iteration"),
                   flags=None if flags is None else tuple(flags),
                   changes=tuple(Change.from_json(c) for c in data.get("changes") or []))


# The record's own keys; every other key is the spec's (RunSpec.record()), kept as written.
RECORD_KEYS = ("name_asked", "started", "slurm_job", "resumes")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """rlhpc_run_spec.json: the spec that started a run (flat, RunSpec.record()'s keys) and what came after."""

    spec: MappingProxyType  # RunSpec.record() as written when the run started
    name_asked: str | None  # --name as given (the run's dir may be <name>_2); None: a record from before
    started: str | None
    slurm_job: str | None  # the job that started it (an array task: ARRAYJOB_TASK)
    resumes: tuple = ()  # ResumeEntry each

    # What readers of a finished run take from its spec (rlhpc.outputs.evaluate, rlhpc.outputs.compare, --resume).
    @property
    def algo(self) -> str | None:
        return self.spec.get("algo")

    @property
    def env(self) -> dict | None:
        """The env's source as rlhpc.envs.sources.EnvSource.record() wrote it."""
        return self.spec.get("env")

    @property
    def stop(self) -> dict:
        return self.spec.get("stop") or {}

    @property
    def agent_policy(self) -> dict:
        return self.spec.get("agent_policy") or {}

    @property
    def train_batch_size(self) -> int | None:
        return self.spec.get("train_batch_size")

    @property
    def storage_path(self) -> str | None:
        return self.spec.get("storage_path")

    @property
    def flags(self) -> tuple | None:
        """The trainer's flags the run started with (None: a run from before runs recorded them)."""
        flags = self.spec.get("flags")
        return None if flags is None else tuple(flags)

    @property
    def config_file(self) -> ConfigFile | None:
        data = self.spec.get("config_file")
        return ConfigFile.from_json(data) if data else None

    def slurm_jobs(self) -> set:
        """The Slurm jobs that trained the run (a chain started by a resume by hand is that resume's job)."""
        return {self.slurm_job} | {entry.slurm_job for entry in self.resumes}

    def with_resume(self, entry: ResumeEntry) -> "RunRecord":
        return dataclasses.replace(self, resumes=(*self.resumes, entry))

    def to_json(self) -> dict:
        data = dict(self.spec)
        # A record from before names were claimed, or one made by hand, may lack these: it keeps lacking them.
        data.update({key: value for key, value in (("name_asked", self.name_asked), ("started", self.started))
                     if value is not None})
        data.update(slurm_job=self.slurm_job, resumes=[entry.to_json() for entry in self.resumes])
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        return cls(spec=MappingProxyType({k: v for k, v in data.items() if k not in RECORD_KEYS}),
                   name_asked=data.get("name_asked"), started=data.get("started"), slurm_job=data.get("slurm_job"),
                   resumes=tuple(ResumeEntry.from_json(entry) for entry in data.get("resumes") or []))
