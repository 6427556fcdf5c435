"""Which implementation does the monitor's P-length work, and the CPU threads it may use.

Two backends compute the same thing (the same float32 differences, float64 products and sums):

* ``"numba"`` — compiled fused kernels (:mod:`._numba_kernels`) over zero-copy numpy views of
  CPU tensors: one pass per snapshot, at memory speed, multi-threaded;
* ``"torch"`` — a few large torch operations per snapshot: the path on CUDA (and any non-CPU
  device), for dtypes numba cannot see (bfloat16, float16), and on CPUs without numba.

``EDGESWEEP_MONITOR_BACKEND`` = ``auto`` (default: numba for CPU snapshots of at least
:data:`NUMBA_MIN_PARAMS` coordinates) | ``numba`` | ``torch`` overrides the choice for CPU
tensors (tests use it to run both paths; ``numba`` fails loudly when numba is missing).
numba is imported, and its kernels loaded or compiled, on first use only.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

BACKEND_ENV = "EDGESWEEP_MONITOR_BACKEND"
# Below this many monitored coordinates ``auto`` keeps the torch path: a snapshot there costs
# a few ms either way, less than what importing numba and starting its threads costs a fresh
# process once (~1–2 s; benchmarks/README.md), and most small-model trials are short.
NUMBA_MIN_PARAMS = 1 << 20
_NUMBA_DTYPES = (torch.float32, torch.float64)

_nk = None            # the kernels module once imported, False when numba is unavailable
_warm: set = set()    # dtypes whose kernels are compiled/loaded in this process
compile_seconds: dict = {}  # dtype name → seconds the first (compiling or cache-loading) call took


def numba_kernels():
    """The compiled-kernel module, or None when numba cannot be imported."""
    global _nk
    if _nk is None:
        try:
            from . import _numba_kernels
            _nk = _numba_kernels
        except ImportError:
            _nk = False
    return _nk or None


def requested_backend() -> str:
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "numba", "torch"):
        raise ValueError(f"{BACKEND_ENV} must be auto|numba|torch, got {choice!r}")
    return choice


def backend_for(device: torch.device, views) -> str:
    """"numba" for CPU tensors of a dtype it compiles for (when available and not overridden;
    under ``auto`` only from :data:`NUMBA_MIN_PARAMS` coordinates on), else "torch"."""
    choice = requested_backend()
    cpu_ok = device.type == "cpu" and all(v.dtype == views[0].dtype and v.dtype in _NUMBA_DTYPES
                                          for v in views)
    if choice == "torch" or not cpu_ok:
        return "torch"
    if choice == "auto" and sum(v.numel() for v in views) < NUMBA_MIN_PARAMS:
        return "torch"
    if numba_kernels() is None:
        if choice == "numba":
            raise RuntimeError(f"{BACKEND_ENV}=numba but numba cannot be imported")
        return "torch"
    return "numba"


@contextmanager
def threads(n: int | None = None):
    """Run kernels with ``n`` numba threads (default: torch's thread count, which a trial pins
    to its CPU share), capped at numba's pool size; torch's own count is restored on exit.

    Why the restore: numba's OpenMP threading layer and torch share one libgomp, and a numba
    parallel launch resets the process's OpenMP thread count — measured here, torch went from
    1 thread to 2 after one launch, which oversubscribes a 1-CPU trial (every later torch op
    then waits for a second core).
    """
    import numba

    torch_threads = torch.get_num_threads()
    want = torch_threads if n is None else int(n)
    numba.set_num_threads(max(1, min(want, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield numba.get_num_threads()
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def warm_up(dtype: torch.dtype) -> float:
    """Compile (or load from the on-disk cache) the kernels for ``dtype`` once per process,
    on tiny arrays, so that no snapshot's timing includes compilation. Returns the seconds
    spent (0 when already warm)."""
    if dtype in _warm:
        return 0.0
    nk = numba_kernels()
    t0 = time.perf_counter()
    x = torch.zeros(8, dtype=dtype).numpy()
    with threads():
        nk.exact_update(x, x.copy(), torch.zeros(2, 8, dtype=dtype).numpy(), 0, 0, 4, 2)
        nk.sketch_accumulate(x, 0, _key0(), 2, 2)
    elapsed = time.perf_counter() - t0
    _warm.add(dtype)
    compile_seconds[str(dtype).removeprefix("torch.")] = elapsed
    return elapsed


def _key0():
    import numpy as np

    return np.uint64(0)
