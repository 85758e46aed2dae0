#!/usr/bin/env bash
# Multi-process / multi-node train through torchrun and mmengine's launcher (gloo on CPU, nccl on GPU).
#   bash tools/dist_train.sh CONFIG GPUS [extra args]
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> bash tools/dist_train.sh ...
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
ARGS=("$CONFIG")
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
exec "$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" "$ROOT/tools/train.py" "${ARGS[@]}" --launcher pytorch "$@"
