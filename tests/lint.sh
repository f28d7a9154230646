#!/usr/bin/env bash
# Lint, its own step of the README's test command (tests/run_all.sh): ruff with the rules pyproject.toml selects
# (complexity included), then mypy on the package as [tool.mypy] in pyproject.toml configures it. Both run, so one
# pass shows every finding; the step fails if either found something.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
.venv/bin/ruff check --output-format concise . || status=1
.venv/bin/mypy || status=1
exit "$status"
