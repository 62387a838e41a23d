#!/usr/bin/env bash
# Quick start 2: set up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh test
export GLOG_v=3            # keep MindSpore's C++ warnings out of the test log
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
