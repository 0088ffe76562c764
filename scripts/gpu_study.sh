#!/usr/bin/env bash
# The estimator study of issue 12 (benchmarks/estimators.py) on one CUDA machine, within a
# deadline. SHARDS processes share the GPU, each taking every SHARDS-th image and writing
# its report after each reference and each run; at the deadline they stop and their reports
# are merged into REPORT (an image cut off keeps the runs it finished, counted as done only
# when all are there: the report's "scope" says what it holds). Run it again with the same
# REPORT to go on: each shard resumes from REPORT's runs.
# Usage: scripts/gpu_study.sh [PYTHON] [DATA]   (DATA: an ImageNet LOC folder, default
# $SHAPCAM_IMAGENET, else ../shared/imagenet-val-subset)
# Settings, from the environment: LAYERS ("blocks.4:2 blocks.4"), BUDGETS ("1000 4000
# 16000"), SEEDS ("0 1"), IMAGES (20), REFERENCE (262144 evaluations, as the CPU runs),
# SHARDS (8), DEADLINE (420 s), DEVICE (cuda), REPORT (benchmarks/estimators_gpu.json),
# NOTE (the report's remark; by default the shards and the deadline). Not OUT: on the
# device machine that names the folder whose files come back.
# Left out, as in the CPU runs: SPEX (minutes per run), SVARMIQ (SV) and SHAPIQ (SV)
# (the same estimates as SVARM and UnbiasedKernelSHAP). A 16k run takes minutes per image
# and shard even on a GPU: shapiq's StratifiedSamplingSV and OwenSamplingSV value one
# coalition per call (16,000 calls), and ProxySPEX fits its trees on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
DATA=${2:-${SHAPCAM_IMAGENET:-../shared/imagenet-val-subset}}
LAYERS=${LAYERS:-"blocks.4:2 blocks.4"}
BUDGETS=${BUDGETS:-"1000 4000 16000"}
SEEDS=${SEEDS:-"0 1"}
IMAGES=${IMAGES:-20}
REFERENCE=${REFERENCE:-262144}
SHARDS=${SHARDS:-8}
DEADLINE=${DEADLINE:-420}
DEVICE=${DEVICE:-cuda}
REPORT=${REPORT:-benchmarks/estimators_gpu.json}
NOTE=${NOTE:-"scripts/gpu_study.sh: $SHARDS shards, deadline $DEADLINE s"}
THREADS=$(( $(nproc) / SHARDS > 0 ? $(nproc) / SHARDS : 1 ))
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')"
fi
work=$(mktemp -d)
for ((k = 0; k < SHARDS; k++)); do
  if [ -f "$REPORT" ]; then cp "$REPORT" "$work/shard-$k.json"; fi
  # shellcheck disable=SC2086  # the lists are meant to split into arguments
  OMP_NUM_THREADS=$THREADS timeout "$DEADLINE" "$PY" -m benchmarks.estimators \
    --device "$DEVICE" --data "$DATA" --images "$IMAGES" --budgets $BUDGETS \
    --seeds $SEEDS --layers $LAYERS --reference-budget "$REFERENCE" \
    --skip "shapiq SVARMIQ (SV)" "shapiq SHAPIQ (SV)" "shapiq SPEX (SV)" \
    --shard "$k/$SHARDS" --resume --out "$work/shard-$k.json" \
    --note "$NOTE" \
    >"$work/shard-$k.log" 2>&1 &
done
wait || true
for ((k = 0; k < SHARDS; k++)); do
  echo "--- shard $k/$SHARDS"
  grep -v '^|' "$work/shard-$k.log" | tail -n 4 || true
done
mapfile -t reports < <(ls "$work"/shard-*.json 2>/dev/null)
if [ ${#reports[@]} -eq 0 ]; then
  echo "no shard finished an image within $DEADLINE s" >&2
  exit 1
fi
"$PY" -m benchmarks.estimators --merge "${reports[@]}" --out "$REPORT"
