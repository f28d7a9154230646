#!/usr/bin/env bash
# Lint, its own step of the README's test command (tests/run_all.sh): ruff with the rules pyproject.toml selects.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --output-format concise .
