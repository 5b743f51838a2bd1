#!/usr/bin/env bash
# Train the fusion network on a GPU and evaluate it on the validation split (MSRS night).
#
# Usage (repository root): scripts/gpu_train.sh OUT [CONFIG] [extra ivf-train args...]
# Data: ../shared/datasets, or $IVF_SHARED_DIR/datasets when set (the lent GPU gets a copy).
# Writes OUT/run/ (checkpoints, CSV logs, loss PNGs, stage weights) and OUT/eval/ (report).
set -euo pipefail
out=${1:?usage: scripts/gpu_train.sh OUT [CONFIG] [ivf-train args...]}
config=${2:-config/train.yaml}
shift $(( $# > 1 ? 2 : 1 ))
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$(date +%s)
python -m ivf_ros.cli.train --stage all --config "$config" --output "$out/run" \
    --device auto --no-progress "$@"
echo "train_seconds $(( $(date +%s) - start ))"
python -m ivf_ros.cli.eval --split validation --no-progress -o "$out/eval" \
    -m visible infrared average max laplacian clahe_laplacian ours="$out/run/stage3.pt"
