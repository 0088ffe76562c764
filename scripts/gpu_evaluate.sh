#!/usr/bin/env bash
# The ImageNet runs at the non-additive layers (blocks.5, blocks.4) on one CUDA GPU, in
# resumable pieces, stopping when SECONDS_TOTAL have passed; rerunning the script resumes
# where it stopped. Usage: scripts/gpu_evaluate.sh OUTDIR [PROCESSES] [SECONDS_TOTAL]
# OUTDIR gets blocks.5/ and blocks.4/ (results.json, .csv, .records.jsonl); the data
# folder is $SHAPCAM_IMAGENET (default ../shared/imagenet-val-subset). Each layer's Score-CAM
# piece runs first, so that the summary its main piece writes last lists every method.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:?usage: scripts/gpu_evaluate.sh OUTDIR [PROCESSES] [SECONDS_TOTAL]}
PROCS=${2:-4}
TOTAL=${3:-3600}
PY=${PYTHON:-python3}
evaluate() {  # the options of shapcam evaluate; stops at the deadline
  local left=$((TOTAL - SECONDS))
  if [ "$left" -le 5 ]; then echo "deadline reached before: $*"; return 1; fi
  timeout "$left" "$PY" -m torch.distributed.run --standalone --nproc_per_node "$PROCS" \
    -m shapcam_widgets.evaluation --device cuda --no-progress "$@"
}
CAMS=shapcam,shapcam_logit,gradcam,gradcampp,layercam,center,random
B5=(--layer blocks.5 --samples 256 --out "$OUTDIR/blocks.5/results.json")
B4=(--layer blocks.4 --block-size 2 --samples 256 --out "$OUTDIR/blocks.4/results.json")
evaluate "${B5[@]}" --methods scorecam --limit 200
evaluate "${B5[@]}" --methods "$CAMS,cam"
evaluate "${B4[@]}" --methods scorecam --limit 200
evaluate "${B4[@]}" --methods "$CAMS" --limit 300
