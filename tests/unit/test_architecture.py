"""The package's shape, checked from its source: subpackages by stage, imports in one direction, Ray where it may be."""

import ast
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO

PACKAGE = REPO / "rlhpc"
# Each stage's subpackage and the stages it may import (rlhpc.errors is everyone's). A run flows
# flags -> run (resolved spec) -> envs -> algo (RLlib config) -> train (backends) -> outputs (report), and the
# imports point down that flow's dependencies: nothing below imports what is above it.
MAY_IMPORT = {
    "envs": set(),
    "run": {"envs"},
    "algo": {"run", "envs"},
    "outputs": {"run", "envs"},
    "train": {"algo", "outputs", "run", "envs"},
    "slurm": {"run"},
}
# Parts that read or resolve without Ray: importing them must leave Ray out (auth is set up before Ray is imported,
# and evaluate/compare/doctor run on login nodes), and they import Ray nowhere except where listed, with why.
RAY_FREE = ["rlhpc.run", "rlhpc.outputs.compare", "rlhpc.outputs.report", "rlhpc.train.trainer"]
RAY_ALLOWED_IN = {
    "rlhpc/run/algorithms.py": "RLlib's algorithm registry, read by name when a run is resolved",
    "rlhpc/run/experiment.py": "Tune's Tuner.can_restore, the only reader of a Tune experiment's state",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set:
    """The modules a file imports anywhere in it, function-level imports included, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from rlhpc.run import spec` imports rlhpc.run.spec; `from rlhpc.run.spec import x` imports rlhpc.run.spec
            found.update(f"{node.module}.{a.name}" for a in node.names)
            found.add(node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def rlhpc_imports(path: Path) -> set:
    return {name for name in imports_of(path) if name in MODULES and not name.endswith("__init__")} \
        - {module_name(path)} - {name for name in MODULES if PACKAGES.get(name)}


PACKAGES = {module_name(p.parent / "__init__.py"): True for p in PACKAGE.glob("*/__init__.py")}


def stage(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and f"rlhpc.{parts[1]}" in PACKAGES else None


def test_every_module_lives_in_a_stage_subpackage_or_is_an_entry_point():
    top = sorted(m for m in MODULES if m.count(".") == 1 and m not in PACKAGES)
    # errors: everyone's one-line errors; command: the `rlhpc` command; the rest: `python -m rlhpc.X` entry points
    assert top == ["rlhpc.command", "rlhpc.compare", "rlhpc.doctor", "rlhpc.errors", "rlhpc.evaluate"], top
    assert {m.split(".")[1] for m in PACKAGES} == set(MAY_IMPORT)


def test_stages_import_only_the_stages_below_them():
    wrong = []
    for module, path in MODULES.items():
        own = stage(module)
        if own is None:
            continue
        for dep in rlhpc_imports(path):
            other = stage(dep)
            if other and other != own and other not in MAY_IMPORT[own]:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the flow: " + ", ".join(sorted(wrong))


def test_no_import_cycles_among_rlhpc_modules():
    graph = {module: rlhpc_imports(path) for module, path in MODULES.items() if module not in PACKAGES}
    cycles = []

    def visit(module, trail):
        if module in trail:
            cycles.append(trail[trail.index(module):] + [module])
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*trail, module])

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_says_its_one_job():
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{path} has no docstring saying what it is for"


def test_the_resolving_and_reading_parts_import_no_ray():
    found = []
    for module, path in MODULES.items():
        if not any(module == free or module.startswith(free + ".") for free in RAY_FREE):
            continue
        rel = str(path.relative_to(REPO))
        if rel not in RAY_ALLOWED_IN and any(n == "ray" or n.startswith("ray.") for n in imports_of(path)):
            found.append(rel)
    assert not found, f"Ray imported in {found}; list it in RAY_ALLOWED_IN with the reason, or move the code"


@pytest.mark.parametrize("module", RAY_FREE + ["rlhpc.evaluate", "rlhpc.compare", "rlhpc.doctor"])
def test_importing_leaves_ray_out(module):
    """Auth must be set up before Ray is imported (Ray reads RAY_AUTH_* once); evaluate, compare and the
    doctor run on login nodes without starting Ray."""
    modules = sorted(m for m in MODULES if m == module or m.startswith(module + "."))
    code = f"import sys; import {', '.join(modules)}; print('ray' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"import {module} imported ray"
