#!/usr/bin/env bash
# Build the Jupyter Book offline, warnings as errors.
#
#   scripts/build_book.sh [PYTHON]      (default: .venv/bin/python)
#
# 1. npm ci: MathJax 3, require.js and the widget HTML manager from package-lock.json
#    (node_modules/ is ignored; no third-party code is committed).
# 2. Copy what the pages need into _build/_vendor/ (not a top-level _static/, whose
#    every file Jupyter Book 1 would inject into every page); _config.yml points
#    html_static_path, mathjax_path and nb_ipywidgets_js there.
# 3. jupyter-book build . -W -n --keep-going (executes every notebook).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
BIN="$(dirname "$PY")"

if [ ! -d node_modules/mathjax ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
fi

VENDOR=_build/_vendor/vendor
rm -rf _build/_vendor
mkdir -p "$VENDOR/mathjax/output" "$VENDOR/widgets"
cp node_modules/mathjax/es5/tex-mml-chtml.js "$VENDOR/mathjax/"
cp -r node_modules/mathjax/es5/output/chtml "$VENDOR/mathjax/output/"
cp node_modules/requirejs/require.js "$VENDOR/require.js"
WIDGETS=node_modules/@jupyter-widgets/html-manager/dist
cp "$WIDGETS/embed-amd.js" "$VENDOR/widgets/"
# webpack emits the icon fonts next to the bundle and loads them relative to it
cp "$WIDGETS"/*.woff2 "$WIDGETS"/*.woff "$WIDGETS"/*.ttf "$VENDOR/widgets/"
cp node_modules/mathjax/LICENSE "$VENDOR/mathjax/LICENSE"
cp "$WIDGETS/embed.js.LICENSE.txt" "$VENDOR/widgets/LICENSES.txt"

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$(date +%s)
"$BIN/jupyter-book" build . -W -n --keep-going
echo "book built in $(( $(date +%s) - start )) s: _build/html/index.html"
