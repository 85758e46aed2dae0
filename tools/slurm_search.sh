#!/usr/bin/env bash
# Slurm: srun one task per GPU; mmengine's 'slurm' launcher reads the SLURM_* variables.
#   GPUS=16 bash tools/slurm_search.sh PARTITION JOB_NAME CONFIG CHECKPOINT [extra args]
set -euo pipefail
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; CHECKPOINT=$4; shift 4
GPUS=${GPUS:-8}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}; CPUS_PER_TASK=${CPUS_PER_TASK:-5}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    "$PY" -u "$ROOT/tools/search.py" "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
