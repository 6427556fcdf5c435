"""Count-sketch projection of update rows: P → d at O(P) cost per row (DESIGN.md §1.2).

A count-sketch maps coordinate i to bucket h(i) with sign s(i); Sδ = Σ_i s(i) δ_i e_{h(i)}.
It is an unbiased inner-product estimator, E⟨Sx, Sy⟩ = ⟨x, y⟩, with variance ≤ 2‖x‖²‖y‖²/d,
the same order as a dense Gaussian Johnson–Lindenstrauss map — but it costs one pass over δ
instead of d passes, and needs one int64 per coordinate instead of d floats
(``benchmarks/monitor.py`` measures both choices side by side).

The sign is folded into the bucket: bucket b ∈ [0, 2d) adds into b, and the sketch is
out[:d] − out[d:]. That makes the projection a single ``index_add_`` with no multiply pass.
"""

from __future__ import annotations

import torch


class CountSketch:
    """Seeded count-sketch of length-P vectors to d dimensions.

    The hash is generated chunk by chunk from ``seed`` so that the same (P, d, seed) always
    gives the same map on any device, and can be regenerated after a restore instead of
    being stored in a checkpoint.
    """

    CHUNK = 1 << 22

    def __init__(self, n_params: int, dim: int, seed: int = 0, device: str | torch.device = "cpu"):
        if dim < 1:
            raise ValueError(f"sketch dimension must be ≥ 1, got {dim}")
        self.n_params = int(n_params)
        self.dim = int(dim)
        self.seed = int(seed)
        self.device = torch.device(device)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed)
        # Generated on the CPU for device-independence, then moved once.
        self.buckets = torch.randint(0, 2 * self.dim, (self.n_params,), generator=gen,
                                     dtype=torch.int64).to(self.device)

    def accumulate(self, out2: torch.Tensor, values: torch.Tensor, offset: int) -> None:
        """Add the contribution of ``values`` (coordinates offset..offset+n) into ``out2``,
        a (2d,) accumulator in the values' dtype."""
        n = values.numel()
        out2.index_add_(0, self.buckets[offset:offset + n], values.reshape(-1))

    @staticmethod
    def finish(out2: torch.Tensor) -> torch.Tensor:
        d = out2.numel() // 2
        return out2[:d] - out2[d:]

    def project(self, vector: torch.Tensor) -> torch.Tensor:
        """Sketch of one flat vector (convenience for tests and benchmarks)."""
        if vector.numel() != self.n_params:
            raise ValueError(f"expected {self.n_params} coordinates, got {vector.numel()}")
        out2 = torch.zeros(2 * self.dim, dtype=vector.dtype, device=vector.device)
        flat = vector.reshape(-1)
        for a in range(0, self.n_params, self.CHUNK):
            self.accumulate(out2, flat[a:a + self.CHUNK], a)
        return self.finish(out2)
