#!/usr/bin/env bash
# The prepared GPU check (issue 15): benchmarks/device_check.py with the device machine's setup.
#
#   bash scripts/device-check.sh                 # on a lent GPU machine: CUDA checks, step times,
#                                                # monitor cost, then as much of the 48-run paper
#                                                # protocol as the rest of 8 minutes allows (each
#                                                # trial recorded as finished, cut or not started)
#   bash scripts/device-check.sh --cpu --tiny    # dry run on this CPU machine (≤ 2 min; CI runs it)
#
# Outputs go to $OUT (set on the device machine; here default ./device-check-out, git-ignored):
# device_check.json, device_check.md, sweep.tar.gz and device-check.log — four files.
# Any other argument is passed to benchmarks/device_check.py (--budget S, --sections LIST,
# --workers N, ...; see its --help). Exit: 0 all passed, 1 a check or section failed, 2 no CUDA
# device, 3 the carried wheels are missing or broken, 4 the hard limit stopped it.
# The machine gets the tree without .git: give the commit, so that the trials rows name it —
#   EDGESWEEP_CODE_VERSION=<git rev-parse --short=12 HEAD here> bash scripts/device-check.sh
#
# The device image has torch + CUDA, numpy, scipy, pyarrow, pandas, numba, matplotlib and
# pyyaml but neither Polars nor pydantic (nor Ray, which the check does not use): when this
# Python cannot import them and .whl/ holds the wheels of scripts/fetch-device-wheels.sh
# (carried with the call: carry [".whl"]), they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CPU=0
TINY=0
BUDGET=
prev=
for a in "$@"; do
  [ "$a" = "--cpu" ] && CPU=1
  [ "$a" = "--tiny" ] && TINY=1
  [ "$prev" = "--budget" ] && BUDGET=${a%.*}
  case "$a" in --budget=*) BUDGET=${a#--budget=}; BUDGET=${BUDGET%.*};; esac
  prev=$a
done
[ -z "$BUDGET" ] && { [ "$TINY" = 1 ] && BUDGET=110 || BUDGET=450; }  # device_check.py's defaults
OUT=${OUT:-$ROOT/device-check-out}
mkdir -p "$OUT"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONUNBUFFERED=1
export MPLBACKEND=Agg

if ! "$PY" -c "import polars, pydantic" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -c "import lzma" ||
      { echo "device-check: $PY has no lzma module, which the LZMA-recompressed wheels need" >&2; exit 3; }
    echo "device-check: installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "device-check: wheel install failed" >&2; exit 3; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    # Fail here, once and clearly, rather than in every trial and in the aggregation.
    "$PY" -c "import polars, pydantic; print('device-check: polars', polars.__version__, '/ pydantic', pydantic.__version__)" ||
      { echo "device-check: the carried wheels installed but do not import (above)" >&2; exit 3; }
  else
    echo "device-check: $PY cannot import polars/pydantic and .whl/ is empty:" \
         "run scripts/fetch-device-wheels.sh here and carry .whl" >&2
    exit 3
  fi
fi
# The package from this checkout, installed or not (the device machine gets a bare copy).
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

if [ "$CPU" = 1 ]; then
  # The dry run: no GPU even where one exists, and Ray hidden as on the device image, so
  # that CI proves the check needs neither.
  export CUDA_VISIBLE_DEVICES=""
  export EDGESWEEP_DEVICE_CHECK_HIDE=ray
fi

# A hard stop half a minute after the script's own budget (--budget, default 450 s: 8 minutes in
# all; 110 s with --tiny): what it measured is already in $OUT (device_check.json is rewritten
# after every section).
HARD=${DEVICE_CHECK_HARD_LIMIT:-$((BUDGET + 30))}
timeout --signal=TERM --kill-after=15 "$HARD" \
  "$PY" benchmarks/device_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/device-check.log"
rc=${PIPESTATUS[0]}
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  # timeout's own codes, which the device tool reads as its limit: say it was ours.
  echo "device-check: hard limit of ${HARD}s reached (exit $rc from timeout); partial outputs in $OUT" >&2
  rc=4
fi
echo "device-check: exit $rc; outputs in $OUT:"
ls -l "$OUT"
exit "$rc"
