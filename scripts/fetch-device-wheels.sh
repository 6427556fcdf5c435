#!/usr/bin/env bash
# Download the wheels that the GPU check (scripts/device-check.sh) needs on the lent GPU machine
# and does not find in its image: Polars (aggregation and the report), pydantic (the sweep spec)
# and their pure-Python needs. Ray is NOT among them (larger than what a call may carry, and the
# check runs the trial code path without it). The image has torch + CUDA, numpy, scipy,
# pyarrow, pandas, numba, matplotlib and pyyaml (/work/.library/device/KINDS.md).
#
# Target: CPython 3.12, manylinux x86_64 (the device machine), whatever this machine is.
# Output: .whl/ in the repository root (git-ignored); `run` carries it with carry: [".whl"].
# The versions are the ones this repository is tested with (Python 3.11 here); keep one
# version of each: two copies of a package stop the device machine's install.
#
#   bash scripts/fetch-device-wheels.sh            # idempotent: skips what is already there
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
mkdir -p "$DEST"

WHEELS=(
  polars==2.2.0
  polars-runtime-32==2.2.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
)

have() {  # is a wheel of NAME==VERSION already in $DEST?
  local name=${1%%==*} ver=${1##*==}
  local stem; stem=$(echo "$name" | tr '-' '_')
  compgen -G "$DEST/${stem}-${ver}-*.whl" >/dev/null
}

for spec in "${WHEELS[@]}"; do
  if have "$spec"; then
    echo "have $spec"
    continue
  fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 \
    -d "$DEST" "$spec"
  have "$spec" || { echo "fetch-device-wheels: no wheel for $spec landed in $DEST" >&2; exit 1; }
done

# One version of each distribution, nothing else.
n=$(ls "$DEST"/*.whl | wc -l)
if [ "$n" -ne "${#WHEELS[@]}" ]; then
  echo "fetch-device-wheels: $DEST holds $n wheels, expected ${#WHEELS[@]}; remove the strays:" >&2
  ls "$DEST" >&2
  exit 1
fi
# Recompress the large ones (Polars' runtime: 53.9 → 32.9 MB) so that the working tree keeps
# room beside them in the 64 MiB a call carries; pip installs LZMA wheels as they are.
"$PY" scripts/lzma_wheels.py "$DEST"/*.whl
du -ch "$DEST"/*.whl | sed 's/^/  /'
