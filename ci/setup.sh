#!/usr/bin/env bash
# Create .venv (if missing) and install ascend-v4 with its pinned dependencies.
# Usage: bash ci/setup.sh [extra]   (extra = "test" also installs pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
