#!/usr/bin/env bash
# bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]   (multi-node: see tools/torchrun.sh)
set -euo pipefail
CONFIG=$1; CHECKPOINT=$2; GPUS=$3; shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun.sh" test "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
