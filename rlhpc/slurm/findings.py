"""The doctor's findings as typed records, and their JSON form: what a node's srun step prints and the doctor reads.

    {"node": "n3", "versions": {"ray": "2.60.0", ...}, "facts": {"cpus": 8, ...},
     "problems": [["FAIL", "Ray's temp dir root ... set RLHPC_RAY_TMP=/tmp"], ["WARN", "..."]]}

A node's step runs `python -m rlhpc.doctor --node` and prints one such line; rlhpc.slurm.doctor reads it back.
Both sides convert here and only here.
"""

import dataclasses

FAIL = "FAIL"  # training cannot work (or not as asked): exit 1
WARN = "WARN"  # it works, slowly or less safely


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem on a node, with its fix in the text."""

    level: str  # FAIL or WARN
    text: str

    def to_json(self) -> list:
        return [self.level, self.text]

    @classmethod
    def from_json(cls, data) -> "Finding":
        level, text = data
        return cls(level=level, text=text)


@dataclasses.dataclass
class NodeReport:
    """What the doctor learned about one node: its versions, its facts (shown in its line) and its problems.
    Not frozen: the comparison across nodes and the network check add problems after the node's own checks."""

    node: str
    versions: dict = dataclasses.field(default_factory=dict)  # package -> version ({}: no report from the node)
    facts: dict = dataclasses.field(default_factory=dict)  # cpus, gpus, temp, shm, address, port, ...; or "seen"
    problems: list = dataclasses.field(default_factory=list)  # Finding each

    @property
    def worst(self) -> str:
        """FAIL, WARN, or ok: the node's line."""
        levels = {problem.level for problem in self.problems}
        return FAIL if FAIL in levels else WARN if levels else "ok"

    def to_json(self) -> dict:
        return {"node": self.node, "versions": dict(self.versions), "facts": dict(self.facts),
                "problems": [problem.to_json() for problem in self.problems]}

    @classmethod
    def from_json(cls, data: dict) -> "NodeReport":
        return cls(node=data["node"], versions=dict(data.get("versions") or {}), facts=dict(data.get("facts") or {}),
                   problems=[Finding.from_json(problem) for problem in data.get("problems") or []])
