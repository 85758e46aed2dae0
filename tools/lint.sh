#!/usr/bin/env bash
# The lint gate (OpenMMLab style; settings in setup.cfg): flake8, isort and yapf over the tree.
# tools/run_tests.sh runs it before the tests, so CI enforces it. Fix with:
#   .venv/bin/python -m isort nasbnn_mm tools tests benchmarks configs
#   .venv/bin/python -m yapf -i -r -p nasbnn_mm tools tests benchmarks configs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
TREE=(nasbnn_mm tools tests benchmarks configs)
"$PY" -m flake8 "${TREE[@]}"
"$PY" -m isort --check-only --diff -q "${TREE[@]}"
DIFF="$("$PY" -m yapf --diff -r "${TREE[@]}" || true)"
if [[ -n "$DIFF" ]]; then
  echo "$DIFF" | head -n 60
  echo "lint: yapf would reformat the files above (run: $PY -m yapf -i -r -p ${TREE[*]})" >&2
  exit 1
fi
"$PY" tools/gen_model_zoo.py --check README.md  # the README zoo table is generated from metafile.yml
echo "lint: flake8, isort and yapf clean; README zoo table current"
