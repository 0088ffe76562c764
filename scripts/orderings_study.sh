#!/usr/bin/env bash
# How many orderings until Shap-CAM's ImageNet metrics stop moving, and how much they
# move with the seed: Shap-CAM alone at blocks.5 on the first N images (default 100) with
# m = 16, 64, 256 orderings and seeds 0 and 1, each run under
# results/blocks.5/orderings/m<M>-seed<S>/ (resumable like any `shapcam evaluate` run).
# m = 256 with seed 0 is the main run (results/blocks.5/), which the chapter reads instead.
# Usage: scripts/orderings_study.sh [N] [PYTHON] [extra shapcam evaluate options...]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
PY=${2:-.venv/bin/python}
shift $(( $# < 2 ? $# : 2 ))
for seed in 0 1; do
  for m in 16 64 256; do
    if [ "$m" = 256 ] && [ "$seed" = 0 ]; then continue; fi
    "$PY" -m shapcam_widgets.evaluation --layer blocks.5 --methods shapcam --limit "$N" \
      --samples "$m" --seed "$seed" --no-progress "$@" \
      --out "results/blocks.5/orderings/m$m-seed$seed/results.json"
  done
done
