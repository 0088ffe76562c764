#!/usr/bin/env bash
# One device call's work on a CUDA machine without network, with .gpu/ from
# scripts/gpu_bundle.sh carried: install the bundle's wheels, run scripts/gpu_check.sh,
# then scripts/gpu_study.sh until BUDGET_S seconds after the start (default 540: inside a
# 600 s call), copying what to commit into $OUT (the device machine's return folder) as it
# goes: gpu.json, the study's report, the logs.
# Usage: scripts/gpu_session.sh   (study settings from the environment, as gpu_study.sh
# takes them: LAYERS, BUDGETS, SEEDS, IMAGES, REFERENCE, SHARDS, REPORT, NOTE; STUDY=0
# runs the check alone)
set -u
cd "$(dirname "$0")/.."
started=$(date +%s)
end=$((started + ${BUDGET_S:-540}))
left() { echo $((end - $(date +%s))); }
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD SHAPCAM_IMAGENET=$PWD/.gpu/imagenet
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
echo "== gpu_check ($(left) s left)"
if ! timeout 300 scripts/gpu_check.sh >"$OUT/gpu_check.log" 2>&1; then
  echo "gpu_check.sh failed (its log comes back); the benchmark alone:"
  timeout 240 python3 -m benchmarks.gpu_check --images 20 --out benchmarks/gpu.json \
    >>"$OUT/gpu_check.log" 2>&1
fi
tail -n 8 "$OUT/gpu_check.log"
cp benchmarks/gpu.json "$OUT/"
[ "${STUDY:-1}" = 0 ] && exit 0
report=${REPORT:-benchmarks/estimators_gpu.json}
deadline=$(($(left) - 20))
echo "== gpu_study, deadline $deadline s"
if [ "$deadline" -gt 60 ]; then
  REPORT=$report DEADLINE=$deadline scripts/gpu_study.sh >"$OUT/study.log" 2>&1
  grep -v '^|' "$OUT/study.log" | tail -n 30
  cp "$report" "$OUT/" 2>/dev/null
fi
echo "== done in $(($(date +%s) - started)) s"
