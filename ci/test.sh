#!/usr/bin/env bash
# Quick start 2: set up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh test
export GLOG_v=3            # keep MindSpore's C++ warnings out of the test log
# Two pytest-xdist workers, one per core. --dist loadfile: a test module is one unit of work, so its
# module-scoped fixtures (a compiled model, a live server) are built once and its tests keep their
# order. Not loadgroup: with pytest 9.2 it silently ignores xdist_group (pytest-xdist#1386).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests "$@"
