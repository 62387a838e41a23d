#!/usr/bin/env bash
# Quick start 1: set up, then run the main job on built-in defaults (tiny config, generated weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec .venv/bin/ascend-v4 demo "$@"
