"""Compiled CPU kernels of the monitor (numba). Imported only through :mod:`.kernels`, which
imports this module on first use, so that nothing pays for numba (or its compilation) until a
CPU monitor observes its first snapshot.

Compilation options, and why:

* ``fastmath={"reassoc", "contract"}`` only: reassociation lets LLVM split the float64 sums
  over several vector accumulators (what makes a dot product run at memory speed), and
  contraction allows fused multiply-adds — exact here anyway, since the product of two float32
  numbers is exact in float64. Never ``nnan``/``ninf``: a NaN or inf update must propagate
  into the dot products, because that is how the monitor detects a non-finite snapshot.
* ``parallel=True`` over a fixed partition (``nparts`` parts of whole blocks, independent of
  the number of threads) and a fixed-order sum of the parts: the result is bit-identical
  whatever the thread count, so a trial resumed on a machine with another CPU count
  continues exactly.
* ``cache=True``: the first call in a fresh environment compiles (seconds); later processes
  load the machine code from ``__pycache__``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FASTMATH = {"reassoc", "contract"}

# splitmix64 constants (Steele, Lea & Flood 2014; the finaliser of Java's SplittableRandom).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S27, S30, S31, S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)
ONE = np.uint64(1)
HASH_BLOCK = 2048


@njit(inline="always")
def _dots_into(ring, a, e, x, out):
    """out[r] += ring[r, a:e] · x for every ring row, float64 products and sums.

    Four rows per pass over x: x is loaded once per four rows, and four independent
    accumulators (each vectorised) keep the adds from waiting on each other. Measured on this
    machine's 10⁷-float ring: one row per pass runs at 1.7–2.1× a plain read of the ring,
    four per pass at 1.0–1.3× (benchmarks/README.md)."""
    rows = ring.shape[0]
    r = 0
    while r < rows:
        k = min(4, rows - r)
        if k == 4:
            y0, y1, y2, y3 = ring[r, a:e], ring[r + 1, a:e], ring[r + 2, a:e], ring[r + 3, a:e]
            s0 = s1 = s2 = s3 = 0.0
            for i in range(x.shape[0]):
                xi = np.float64(x[i])
                s0 += np.float64(y0[i]) * xi
                s1 += np.float64(y1[i]) * xi
                s2 += np.float64(y2[i]) * xi
                s3 += np.float64(y3[i]) * xi
            out[r] += s0
            out[r + 1] += s1
            out[r + 2] += s2
            out[r + 3] += s3
        elif k == 3:
            y0, y1, y2 = ring[r, a:e], ring[r + 1, a:e], ring[r + 2, a:e]
            s0 = s1 = s2 = 0.0
            for i in range(x.shape[0]):
                xi = np.float64(x[i])
                s0 += np.float64(y0[i]) * xi
                s1 += np.float64(y1[i]) * xi
                s2 += np.float64(y2[i]) * xi
            out[r] += s0
            out[r + 1] += s1
            out[r + 2] += s2
        elif k == 2:
            y0, y1 = ring[r, a:e], ring[r + 1, a:e]
            s0 = s1 = 0.0
            for i in range(x.shape[0]):
                xi = np.float64(x[i])
                s0 += np.float64(y0[i]) * xi
                s1 += np.float64(y1[i]) * xi
            out[r] += s0
            out[r + 1] += s1
        else:
            y0 = ring[r, a:e]
            s0 = 0.0
            for i in range(x.shape[0]):
                s0 += np.float64(y0[i]) * np.float64(x[i])
            out[r] += s0
        r += k


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def exact_update(view, prev, ring, slot, off, block, nparts):
    """One fused pass over coordinates off..off+n of the monitor's P-length state.

    view: (n,) the snapshot's part; prev: (P,) θ_prev; ring: (R, P) update rows, same dtype.
    Writes ring[slot, off:off+n] = view − prev[off:off+n] (in the snapshot dtype, as
    ``torch.sub`` would) and prev[off:off+n] = view, and returns the (R,) float64 partial dot
    products ring[r, off:off+n] · ring[slot, off:off+n], every product and sum in float64.

    Per block of ``block`` coordinates the new row is formed first and then dotted with every
    ring row while it is still in cache, so the snapshot, θ_prev and the ring are each
    streamed from memory once: the pass costs the ring's read plus θ/θ_prev's read and write.
    Blocks of 64k keep each row's stream long enough for the hardware prefetcher (16k-blocks
    measured ~1.3× slower) while the block of the new row stays in L2.
    """
    n = view.shape[0]
    rows = ring.shape[0]
    out = np.zeros(rows)
    if n == 0:
        return out
    nblocks = (n + block - 1) // block
    parts = min(nparts, nblocks)
    per = (nblocks + parts - 1) // parts
    partial = np.zeros((parts, rows))
    for p in prange(parts):
        b_end = min(nblocks, (p + 1) * per)
        for b in range(p * per, b_end):
            a = b * block
            e = min(n, a + block)
            # Slices and 0-based loops: LLVM vectorises these; a loop over range(a, e) keeps
            # numba's negative-index wrap-around and runs ~10× slower.
            src = view[a:e]
            old = prev[off + a:off + e]
            x = ring[slot, off + a:off + e]
            for i in range(src.shape[0]):
                t = src[i]
                x[i] = t - old[i]
                old[i] = t
            _dots_into(ring, off + a, off + e, x, partial[p])
    for p in range(parts):
        for r in range(rows):
            out[r] += partial[p, r]
    return out


@njit(inline="always")
def _mix64(z):
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def sketch_accumulate(view, off, key, dim, nparts):
    """Count-sketch of coordinates off..off+n: (dim,) float64 with
    out[b] = Σ_{i: bucket(i) = b} sign(i) · view[i − off], bucket and sign from the seeded
    hash of the global coordinate index (see :mod:`.sketch`). No per-coordinate array.

    Per block, the hashes are computed first into a small buffer (that loop vectorises: 64-bit
    multiplies are AVX-512DQ instructions), then scattered. The scatter is the cost (~1 ns per
    coordinate); four interleaved copies of the 2·dim accumulators (sign folded into the
    bucket: b + dim·[sign < 0]) keep consecutive coordinates from waiting on each other's
    store. Sums are float64, in a fixed order: bit-identical for any thread count.
    """
    n = view.shape[0]
    out = np.zeros(dim)
    if n == 0:
        return out
    parts = min(nparts, n)
    per = (n + parts - 1) // parts
    width = 2 * dim
    partial = np.zeros((parts, 4 * width))
    d = np.uint64(dim)
    for p in prange(parts):
        lo = p * per
        hi = min(n, lo + per)
        idx = np.empty(HASH_BLOCK, np.intp)
        acc = partial[p]
        for a in range(lo, hi, HASH_BLOCK):
            src = view[a:min(hi, a + HASH_BLOCK)]
            base = np.uint64(off + a)
            for i in range(src.shape[0]):
                h = _mix64((base + np.uint64(i)) * GOLDEN + key)
                idx[i] = (np.intp(((h >> S32) * d) >> S32) + np.intp(h & ONE) * dim
                          + (i & 3) * width)
            for i in range(src.shape[0]):
                acc[idx[i]] += np.float64(src[i])
    for p in range(parts):
        for q in range(4):
            for b in range(dim):
                out[b] += partial[p, q * width + b] - partial[p, q * width + dim + b]
    return out


@njit(cache=True)
def hash_indices(start, stop, key, dim):
    """(buckets int64, signs int8) of coordinates start..stop — for tests and inspection."""
    n = stop - start
    buckets = np.empty(n, np.int64)
    signs = np.empty(n, np.int8)
    d = np.uint64(dim)
    base = np.uint64(start)
    for i in range(n):
        h = _mix64((base + np.uint64(i)) * GOLDEN + key)
        buckets[i] = np.int64(((h >> S32) * d) >> S32)
        signs[i] = -1 if h & ONE else 1
    return buckets, signs
