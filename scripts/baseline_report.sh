#!/usr/bin/env bash
# Regenerate the classical-baseline reports on ../shared/datasets (one command):
#   <output>/validation/  the team's validation split (36 pairs; ivf_ros.io.datasets.is_validation)
#   <output>/night/       every night pair of every dataset folder (64 pairs)
# With ../shared/weights/yolo11n/yolo11n-rebuilt.pt present, each report also counts YOLO11n
# detections on every method's output (no labels exist for these images, so no mAP).
# Usage: scripts/baseline_report.sh [OUTPUT_DIR]   (default: output/baseline_report)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
output="${1:-}"
# A relative OUTPUT_DIR is the caller's, not the repository's (the script changes directory).
if [ -n "${output}" ] && [ "${output#/}" = "${output}" ]; then
  output="${PWD}/${output}"
fi
cd "${repo_root}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f env.sh ]; then
  # shellcheck disable=SC1091
  . ./env.sh
fi
output="${output:-output/baseline_report}"
# paths.py is the one place that knows where ../shared is (IVF_SHARED_DIR overrides it).
shared="$(python -c 'from ivf_ros.io.paths import shared_dir; print(shared_dir())')"
datasets="${shared}/datasets"
if [ ! -d "${datasets}" ]; then
  echo "baseline_report: no datasets at ${datasets} (a clone without ../shared)" >&2
  exit 2
fi
detector=()
weights="${shared}/weights/yolo11n/yolo11n-rebuilt.pt"
if [ -f "${weights}" ]; then
  detector=(--detector "${weights}")
fi

python -m ivf_ros.cli.eval "${datasets}" --split validation "${detector[@]}" \
  --title 'Classical baselines: MSRS night validation split' \
  --examples 4 --output "${output}/validation"
python -m ivf_ros.cli.eval "${datasets}" --night-only "${detector[@]}" \
  --title 'Classical baselines: all night pairs of ../shared/datasets' \
  --examples 6 --output "${output}/night"
echo "baseline reports: ${output}/validation/report.md ${output}/night/report.md"
