#!/usr/bin/env bash
# The README's test command: install into local venvs, lint, then run the whole suite.
# TensorFlow gets its own venv (.venv-tf): RLlib imports TF whenever it is installed, which
# would slow every other test's start-up and fill logs with CUDA messages. The tracking libraries (W&B,
# MLflow) and the simulators from PyPI (the envs extra) are tested in .venv only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test,tracking,envs,search]"
bash tests/lint.sh
.venv/bin/python -m pytest -m "not tf" --durations=25 "$@"

if [ "${RLHPC_SKIP_TF:-0}" != 1 ]; then
  [ -x .venv-tf/bin/python ] || "$PY" -m venv .venv-tf
  .venv-tf/bin/pip install -q --upgrade pip
  .venv-tf/bin/pip install -q -e ".[test,tf]"
  .venv-tf/bin/python -m pytest -m tf "$@"
fi
