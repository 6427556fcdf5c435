"""Count-sketch projection of update rows: P → d at O(P) cost per row (DESIGN.md §1.2).

A count-sketch maps coordinate i to bucket b(i) with sign s(i); Sx = Σ_i s(i) x_i e_{b(i)}.
It is an unbiased inner-product estimator, E⟨Sx, Sy⟩ = ⟨x, y⟩, with variance ≤ 2‖x‖²‖y‖²/d —
the same order as a dense Gaussian Johnson–Lindenstrauss map, for one pass over x instead of
d passes (``benchmarks/monitor.py`` measures both side by side).

The map is a pure function of (coordinate index, seed), evaluated on the fly — there is no
per-coordinate array, so a sketch of 10⁹ coordinates costs d floats, and the same
(P, d, seed) gives the same map on any device and after any restore:

    key     = mix64(seed + φ)              φ = 0x9E3779B97F4A7C15, all arithmetic mod 2⁶⁴
    h(i)    = mix64(i·φ + key)
    b(i)    = ⌊(h(i) >> 32) · d / 2³²⌋     (the top 32 bits scaled to [0, d))
    s(i)    = −1 if h(i) is odd else +1

with mix64 the splitmix64 finaliser (z ^= z>>30; z *= 0xBF58476D1CE4E5B9; z ^= z>>27;
z *= 0x94D049BB133111EB; z ^= z>>31). i·φ is a bijection of 64-bit integers (φ is odd) and
mix64 is one too, so distinct coordinates never share a hash value; indices are 64-bit
throughout, so P beyond 2³¹ needs nothing special. :data:`HASH_VERSION` names this map; a
monitor state records it (:meth:`CountSketch.fingerprint`) and a restore with another map is
refused, because rows sketched by different maps live in different spaces.

Linearity is what the monitor uses: S(θ_t − θ_{t−1}) = Sθ_t − Sθ_{t−1}, so it keeps the
previous snapshot's sketch (d floats) instead of θ_prev (P floats). Sketches are accumulated
in float64 (float32 snapshot values are exact in float64, so the difference of two sketches
carries only float64 rounding of the sums, ~1e-16·‖θ‖ per bucket).

On the CPU the sketch is a compiled kernel (:mod:`._numba_kernels`); on other devices, or
without numba, the same hash is evaluated with torch integer ops in bounded chunks of
:attr:`CountSketch.CHUNK` coordinates on the snapshot's device.
"""

from __future__ import annotations

import torch

from . import kernels

HASH_VERSION = "splitmix64-index-v1"

_M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(u: int) -> int:
    """A 64-bit pattern as the int64 value torch stores for it."""
    return u - (1 << 64) if u >= 1 << 63 else u


def mix64(z: int) -> int:
    """splitmix64 finaliser on a Python int (mod 2⁶⁴); used for the key and the probe."""
    z &= _M64
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


def sketch_key(seed: int) -> int:
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"sketch seed must be in [0, 2**64), got {seed}")
    return mix64(seed + GOLDEN)


def _lshr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def hash_torch(index: torch.Tensor, key: int) -> torch.Tensor:
    """h(i) for an int64 tensor of coordinate indices (overwritten), as int64 bit patterns.
    torch's int64 multiply wraps mod 2⁶⁴ on CPU and CUDA, which is the arithmetic wanted."""
    z = index.mul_(_signed(GOLDEN)).add_(_signed(key))
    z ^= _lshr(z, 30)
    z.mul_(_signed(_MIX1))
    z ^= _lshr(z, 27)
    z.mul_(_signed(_MIX2))
    z ^= _lshr(z, 31)
    return z


class CountSketch:
    """Seeded count-sketch of length-P vectors to d dimensions (see the module docstring).

    Holds no per-coordinate state: memory is O(1) in P. ``sketch(views)`` returns the float64
    (d,) sketch of the concatenation of ``views`` on their device.
    """

    CHUNK = 1 << 20             # coordinates per torch-path chunk (~40 B each of temporaries)
    CHUNK_CUDA = 1 << 22
    NPARTS = 64                 # fixed partition of the CPU kernel: thread-count independent

    def __init__(self, n_params: int, dim: int, seed: int = 0, device: str | torch.device = "cpu"):
        if dim < 1:
            raise ValueError(f"sketch dimension must be ≥ 1, got {dim}")
        self.n_params = int(n_params)
        self.dim = int(dim)
        self.seed = int(seed)
        self.key = sketch_key(self.seed)
        self.device = torch.device(device)

    # ------------------------------------------------------------------ the map
    def fingerprint(self) -> dict:
        """What identifies the map: checked when a monitor state is restored. The probe (the
        signed buckets of a few coordinates, evaluated by this code) catches a change of the
        hash that forgot to change :data:`HASH_VERSION`."""
        n = self.n_params
        probe_idx = sorted({i for i in (0, 1, 2, n // 3, n // 2, n - 1) if 0 <= i < n})
        b, s = self.buckets_and_signs(torch.tensor(probe_idx, dtype=torch.int64))
        return {"n_params": n, "dim": self.dim, "seed": self.seed, "hash": HASH_VERSION,
                "probe": [int(x) for x in ((b + 1) * s).tolist()]}

    def buckets_and_signs(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket int64, sign int64 ±1) of the given coordinate indices (torch path)."""
        h = hash_torch(index.to(torch.int64).clone(), self.key)
        bucket = (_lshr(h, 32) * self.dim) >> 32
        sign = 1 - 2 * (h & 1)
        return bucket, sign

    # ------------------------------------------------------------------ projection
    def sketch(self, views: list[torch.Tensor], backend: str | None = None) -> torch.Tensor:
        """Float64 (d,) sketch of the flat concatenation of ``views`` (on their device).
        backend: "numba" | "torch" | None (numba for CPU tensors when available)."""
        n = sum(v.numel() for v in views)
        if n != self.n_params:
            raise ValueError(f"expected {self.n_params} coordinates, got {n}")
        device = views[0].device
        if backend is None:
            backend = kernels.backend_for(device, views)
        if backend == "numba":
            nk = kernels.numba_kernels()
            out = None
            off = 0
            with kernels.threads():
                for v in views:
                    part = nk.sketch_accumulate(v.detach().reshape(-1).numpy(), off, _u64(self.key),
                                                self.dim, self.NPARTS)
                    out = part if out is None else out + part
                    off += v.numel()
            return torch.from_numpy(out)
        acc = torch.zeros(self.dim, dtype=torch.float64, device=device)
        chunk = self.CHUNK_CUDA if device.type == "cuda" else self.CHUNK
        off = 0
        for v in views:
            flat = v.detach().reshape(-1)
            for a in range(0, flat.numel(), chunk):
                part = flat[a:a + chunk]
                idx = torch.arange(off + a, off + a + part.numel(), dtype=torch.int64, device=device)
                bucket, sign = self.buckets_and_signs(idx)
                acc.index_add_(0, bucket, part.to(torch.float64) * sign)
            off += flat.numel()
        return acc

    def project(self, vector: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """Float64 sketch of one flat vector (convenience for tests and benchmarks)."""
        return self.sketch([vector.reshape(-1)], backend)


def _u64(key: int):
    import numpy as np

    return np.uint64(key)
