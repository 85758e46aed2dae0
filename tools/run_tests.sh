#!/usr/bin/env bash
# Run the lint gate and the whole test suite; builds the environment first when it is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
bash "$ROOT/tools/lint.sh"
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
