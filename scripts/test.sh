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
# The whole suite (no arguments) runs in two pytest processes, whole modules each (module-scoped
# clusters start once; the modules that start Ray clusters run in one process, one after
# another: tests/conftest.py): 9 min instead of 11.5 on a 2-core VM. A node that a loaded
# machine keeps from starting is started again (tests/raycluster.py). EDGESWEEP_TEST_WORKERS=1
# runs it in one process; a 1-core machine does so by default. With arguments (some files, -k,
# --pdb) pytest runs them in one process, as given.
WORKERS=${EDGESWEEP_TEST_WORKERS:-$([ "$(nproc 2>/dev/null || echo 1)" -ge 2 ] && echo 2 || echo 1)}
case "$WORKERS" in
    ''|*[!0-9]*|0) echo "scripts/test.sh: EDGESWEEP_TEST_WORKERS must be a whole number ≥ 1, not '$WORKERS'" >&2; exit 2;;
esac
if [ $# -eq 0 ] && [ "$WORKERS" -gt 1 ]; then
    PYTEST=(.venv/bin/python -m pytest -n "$WORKERS" --dist loadfile --no-loadscope-reorder)
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
