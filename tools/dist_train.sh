#!/usr/bin/env bash
# bash tools/dist_train.sh CONFIG GPUS [args]   (multi-node: see tools/torchrun.sh)
set -euo pipefail
CONFIG=$1; GPUS=$2; shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun.sh" train "$GPUS" "$CONFIG" "$@"
