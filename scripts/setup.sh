#!/usr/bin/env bash
# Create ./.venv and install edgesweep with its test extras.
#
# torch is pinned to the CPU build first: an unpinned torch makes pip download a multi-GB
# CUDA build. On a GPU cluster, install the CUDA torch wheel you want *before* this script
# (or set EDGESWEEP_TORCH="torch==2.13.0 --index-url <your CUDA wheel index>").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${EDGESWEEP_TORCH:-torch==2.13.0}
.venv/bin/python -m pip install -q -e '.[test]'
echo "edgesweep installed in $(pwd)/.venv"
