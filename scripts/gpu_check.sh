#!/usr/bin/env bash
# The project's GPU check (under 8 minutes on one H100): the tests marked gpu, then
# benchmarks/gpu_check.py, which writes benchmarks/gpu.json (commit it).
# Usage: scripts/gpu_check.sh [PYTHON] [DATA]   (DATA: an ImageNet LOC folder, default
# $SHAPCAM_IMAGENET, else ../shared/imagenet-val-subset)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
DATA=${2:-${SHAPCAM_IMAGENET:-../shared/imagenet-val-subset}}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
"$PY" -m benchmarks.gpu_check --data "$DATA" --images 20 --out benchmarks/gpu.json
