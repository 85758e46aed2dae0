#!/usr/bin/env bash
# The main job: the end-to-end NAS-BNN demo on the shared data (builds the environment first
# when it is missing). Extra arguments go to tools/demo.py (e.g. --work-dir, --data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" tools/demo.py "$@"
