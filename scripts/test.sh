#!/usr/bin/env bash
# Run the whole test suite. Ray tests must send traffic only to loopback, so pytest runs
# inside a fresh network namespace with only `lo` (Ray then binds 127.0.0.1) whenever this
# user may create one (root, or unprivileged user namespaces). Installing happens before,
# in scripts/setup.sh, because it needs the package registry.
set -uo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled          # explicit: Ray ≥ 2.59 may default to token auth
export RAY_USAGE_STATS_ENABLED=0
export PYTHONUNBUFFERED=1
# The whole suite (no arguments) runs in EDGESWEEP_TEST_WORKERS processes (default 2), whole
# modules each (module-scoped clusters start once; the modules that start Ray clusters run in
# one process, one after another: tests/conftest.py). Most of the suite's time is waiting on
# Ray start-ups and subprocesses, not computing. With arguments (some files, -k, --pdb) pytest
# runs them in one process, as given.
if [ $# -eq 0 ] && [ "${EDGESWEEP_TEST_WORKERS:-2}" -gt 1 ]; then
    PYTEST=(.venv/bin/python -m pytest -n "${EDGESWEEP_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
else
    PYTEST=(.venv/bin/python -m pytest "$@")
fi
if unshare -n true 2>/dev/null; then
    NS=(unshare -n)
elif unshare -rn true 2>/dev/null; then
    NS=(unshare -rn)
else
    NS=()
fi
if [ ${#NS[@]} -gt 0 ]; then
    echo "running tests in a private network namespace (${NS[*]}): loopback only"
    "${NS[@]}" bash -c 'ip link set lo up && exec "$@"' _ "${PYTEST[@]}"
else
    echo "WARNING: cannot create a network namespace; Ray tests will bind this host's address"
    "${PYTEST[@]}"
fi
rc=$?
# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
if [ $rc -eq 5 ]; then echo "ERROR: no tests ran"; fi
exit $rc
