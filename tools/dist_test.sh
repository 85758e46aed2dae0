#!/usr/bin/env bash
# Multi-process / multi-node test through torchrun and mmengine's launcher (gloo on CPU, nccl on GPU).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [extra args]
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> bash tools/dist_test.sh ...
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
ARGS=("$CONFIG" "$CHECKPOINT")
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
exec "$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" "$ROOT/tools/test.py" "${ARGS[@]}" --launcher pytorch "$@"
