"""The package's shape, checked from its source: one direction of imports, Ray-free entry points, lint."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PYTHON, REPO

PACKAGE = REPO / "rlhpc"


def rlhpc_imports(path: Path) -> set:
    """The rlhpc modules a file imports anywhere in it, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from rlhpc import envs` imports rlhpc.envs; `from rlhpc.x import y` imports rlhpc.x
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "rlhpc" else [node.module]
        else:
            continue
        found.update(name.split(".")[1] for name in names if name.startswith("rlhpc."))
    return found - {path.stem}


def test_no_import_cycles_among_rlhpc_modules():
    graph = {path.stem: rlhpc_imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    unknown = {dep for deps in graph.values() for dep in deps} - set(graph)
    assert not unknown, f"imports of modules that do not exist: {unknown}"
    cycles = []

    def visit(module, trail):
        if module in trail:
            cycles.append(trail[trail.index(module):] + [module])
            return
        for dep in sorted(graph[module]):
            visit(dep, [*trail, module])

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_says_its_one_job():
    for path in PACKAGE.glob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{path.name} has no docstring saying what it is for"


@pytest.mark.parametrize("module", ["rlhpc.trainer", "rlhpc.spec", "rlhpc.results", "rlhpc.evaluate",
                                    "rlhpc.compare"])
def test_importing_leaves_ray_out(module):
    """Auth must be set up before Ray is imported (Ray reads RAY_AUTH_* once); evaluate and compare run
    on login nodes without starting Ray."""
    out = subprocess.run([PYTHON, "-c", f"import sys, {module}; print('ray' in sys.modules)"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"import {module} imported ray"


def test_ruff_is_clean_with_the_rules_pyproject_selects():
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is in the [test] extra (pip install -e '.[test]')"
    out = subprocess.run([str(ruff), "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
