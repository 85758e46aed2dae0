#!/usr/bin/env bash
# The main job; builds the environment first when it is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
"$PY" tools/count_ops.py --space-size
"$PY" tools/count_ops.py --presets --largest --smallest
