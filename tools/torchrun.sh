#!/usr/bin/env bash
# torchrun with mmengine's 'pytorch' launcher for any of our tools (gloo on CPU, nccl on GPU).
#   bash tools/torchrun.sh TOOL NPROC [tool args]        e.g. bash tools/torchrun.sh train 8 CONFIG
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> PORT=29500 bash tools/torchrun.sh ...
set -euo pipefail
TOOL=$1; NPROC=$2; shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
    "$ROOT/tools/$TOOL.py" "$@" --launcher pytorch
