#!/usr/bin/env bash
# Create ./.venv and install edgesweep with its test extras.
#
# torch is pinned first: an unpinned torch makes pip download a multi-GB CUDA build. Here and in
# CI pip resolves torch==2.13.0 to the CPU wheel from a local index; elsewhere choose it with
# EDGESWEEP_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu". On a GPU
# cluster, install the CUDA torch wheel you want *before* this script (or set
# EDGESWEEP_TORCH="torch==2.13.0 --index-url <your CUDA wheel index>").
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium for the report.html test (tests/test_report_html.py): Debian's package, only
# where apt-get exists and chromium is missing (CI is the same Debian; installing needs root).
if command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${EDGESWEEP_TORCH:-torch==2.13.0}
.venv/bin/python -m pip install -q -e '.[test]'
echo "edgesweep installed in $(pwd)/.venv"
