"""The monitor's configuration and parameter selector — plain data, no torch, so that a sweep
spec can validate it (and the analysis can read it) without importing torch."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

#: Parameter names of the attention projections (docs/CONTRACTS.md naming convention).
ATTENTION_PATTERN = r"(^|\.)(self_|cross_)?attn\.[qkvo]_proj\.weight$"

#: Largest window the monitor accepts: the ring holds W+1 rows of P numbers, and the thesis'
#: windows are 3–25 rows; 1,000 is far beyond any useful window and still fits in memory at
#: small P. Anything above is a typo (``window: 1e9``).
MAX_WINDOW = 1000


@dataclass(frozen=True)
class MonitorConfig:
    """window: W rows. every: optimizer steps between snapshots (used by the trainer).
    params: "attention" | "all" | a regex on parameter names.
    sketch_dim: None for the exact window, else d of the count-sketch; sketch_seed: its map.
    block: coordinates per work unit of the fused CPU kernel (the new row's block is dotted
    with every ring row while it is in cache) and per float64 upcast chunk of the torch path
    on the CPU.
    accumulate: "float64", the only accumulation: float32 loads, float64 products and sums, at
    memory speed since the fused kernel. "block" (float32 products per block, which once bought
    2× speed for a 1 %-of-σ_1 resolution floor) is accepted as a deprecated alias of "float64":
    it no longer buys anything measurable (``benchmarks/README.md``), so old specs and
    checkpoints keep working and get the exact result.
    """

    window: int = 10
    every: int = 100
    params: str = "attention"
    sketch_dim: int | None = None
    sketch_seed: int = 0
    block: int = 1 << 16
    accumulate: str = "float64"

    def __post_init__(self):
        for name, lo, hi in (("window", 2, MAX_WINDOW), ("every", 1, None), ("block", 1, None),
                             ("sketch_seed", 0, (1 << 63) - 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"monitor.{name}: got {v!r}; allowed: an integer in [{lo}, {hi or '∞'}]")
        if self.sketch_dim is not None and self.sketch_dim < 1:
            raise ValueError(f"monitor.sketch_dim must be ≥ 1 or null, got {self.sketch_dim}")
        if self.accumulate not in ("float64", "block"):
            raise ValueError(f"monitor.accumulate must be float64 (or the deprecated alias block), "
                             f"got {self.accumulate!r}")
        if self.accumulate == "block":
            warnings.warn("monitor.accumulate: 'block' is deprecated and now means 'float64' (the "
                          "exact float64 kernel is as fast); drop the key", FutureWarning, stacklevel=3)
            object.__setattr__(self, "accumulate", "float64")
        if self.params not in ("attention", "all"):
            try:
                re.compile(self.params)
            except re.error as exc:
                raise ValueError(f"monitor.params is not a valid regex: {self.params!r} ({exc})") from exc
