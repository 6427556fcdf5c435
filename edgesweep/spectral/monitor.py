"""The streaming spectral monitor: snapshots in, one feature row per snapshot out.

Memory and cost (DESIGN.md §1.1): the monitor holds the previous snapshot and a ring of
W+1 update rows *on the snapshot's device*. A new snapshot costs one pass to form
δ = θ − θ_prev, one copy to keep θ, and W+1 dot products of length P (the new row against
every row of the ring, itself included). The Gram is updated in place — never re-multiplied —
and everything after that works on the (W+1)×(W+1) Gram of the ring in float64:

* the W×W window Gram → σ, k*, gaps, g23, BBP ratio (:mod:`.gram`);
* the (W+1)×(W+1) Gram of the previous and current windows together → the subspace rotation
  and the exact operator change, without touching P-length vectors again.

Why W+1 slots: the slot that is about to be overwritten holds the row that left the window
one snapshot ago; keeping the row that leaves *now* is what makes the rotation exact.

Non-finite snapshots: a NaN/inf update row is never put in the window. The monitor returns a
row flagged ``nonfinite=True`` with NaN features and forgets θ_prev, so the next finite
snapshot re-seeds it (its row is ``None``, like the very first snapshot).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .gram import gram_eigh, spectrum_features, time_features
from .sketch import CountSketch

ATTENTION_PATTERN = r"(^|\.)(self_|cross_)?attn\.[qkvo]_proj\.weight$"

FEATURE_COLUMNS = (
    "step", "window", "sigma", "k_star", "k_star_weighted", "gap_ratio", "gap", "g23",
    "delta_gram_fro", "delta_gram_fro_exact", "adiabatic", "alpha", "subspace_rotation",
    "bbp_ratio", "lr", "update_norm", "gram_ms", "nonfinite",
)


@dataclass(frozen=True)
class MonitorConfig:
    """window: W rows. every: optimizer steps between snapshots (used by the trainer).
    params: "attention" | "all" | a regex on parameter names.
    sketch_dim: None for the exact window, else d of the count-sketch.
    block: elements per dot-product block (the unit of float64 accumulation).
    accumulate: "float64" (default: every block of the ring is upcast into a reused float64
    scratch before its dot products, so products and sums are exact to float64 and every σ_j
    of a float32 window down to ~1e-6·σ_1 meets the 1e-3 relative bar) or "block" (dot products
    in the snapshot dtype per block of ``block`` elements, blocks summed in float64: ~1.2× the
    memory-bandwidth bound on CPU instead of ~3.5×, but a float32 Gram entry then carries a
    relative error of about ε₃₂·√block, so σ_j below ~1 % of σ_1 lose accuracy and those
    below √(ε₃₂·√block) ≈ 0.55 % of σ_1 are reported as exactly 0).
    """

    window: int = 10
    every: int = 100
    params: str = "attention"
    sketch_dim: int | None = None
    sketch_seed: int = 0
    block: int = 1 << 16
    accumulate: str = "float64"

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"monitor.window must be ≥ 2, got {self.window}")
        if self.every < 1:
            raise ValueError(f"monitor.every must be ≥ 1, got {self.every}")
        if self.sketch_dim is not None and self.sketch_dim < 1:
            raise ValueError(f"monitor.sketch_dim must be ≥ 1 or null, got {self.sketch_dim}")
        if self.accumulate not in ("float64", "block"):
            raise ValueError(f"monitor.accumulate must be float64|block, got {self.accumulate!r}")
        if self.params not in ("attention", "all"):
            try:
                re.compile(self.params)
            except re.error as exc:
                raise ValueError(f"monitor.params is not a valid regex: {self.params!r} ({exc})") from exc


def select_parameters(module: torch.nn.Module, params: str) -> list[tuple[str, torch.Tensor]]:
    """The (name, parameter) pairs the monitor flattens, in ``named_parameters`` order."""
    named = list(module.named_parameters())
    if params == "all":
        chosen = named
    else:
        pattern = re.compile(ATTENTION_PATTERN if params == "attention" else params)
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    if not chosen:
        raise ValueError(f"parameter selector {params!r} matches no parameter of "
                         f"{type(module).__name__} (names look like {named[0][0] if named else '—'!r})")
    return chosen


def _nan_row(w: int) -> dict:
    return {"window": w, "sigma": None, "k_star": None, "k_star_weighted": None,
            "gap_ratio": math.nan, "gap": math.nan, "g23": math.nan, "bbp_ratio": math.nan,
            "delta_gram_fro": math.nan, "delta_gram_fro_exact": math.nan, "alpha": None,
            "subspace_rotation": math.nan, "adiabatic": math.nan}


class SpectralMonitor:
    """Streaming rolling-window Gram monitor. See the module docstring.

    ``observe(snapshot, step=…, lr=…)`` takes a flat tensor or an ``nn.Module`` (its
    parameters chosen by ``config.params``) and returns a feature row dict (keys
    :data:`FEATURE_COLUMNS`) or ``None`` while fewer than 2 update rows exist.
    """

    def __init__(self, config: MonitorConfig = MonitorConfig()):
        self.config = config
        self.n_params: int | None = None
        self.names: list[str] | None = None
        self.dtype: torch.dtype | None = None
        self.device: torch.device | None = None
        self.prev: torch.Tensor | None = None      # θ_prev, flat, snapshot dtype
        self.ring: torch.Tensor | None = None      # (W+1, P) or (W+1, d) update rows
        self.gram = np.zeros((config.window + 1,) * 2)  # Gram of the ring slots, float64
        self.slots: list[int] = []                 # ring slots of the current window, oldest first
        self.prev_lam: np.ndarray | None = None    # spectrum of the previous window
        self.sketch: CountSketch | None = None
        self._scratch: torch.Tensor | None = None  # float64 block buffer for exact dots

    # ------------------------------------------------------------------ inputs
    def _views(self, snapshot) -> list[torch.Tensor]:
        if isinstance(snapshot, torch.nn.Module):
            pairs = select_parameters(snapshot, self.config.params)
            names = [n for n, _ in pairs]
            if self.names is not None and names != self.names:
                raise ValueError("the monitored parameter set changed between snapshots")
            self.names = names
            return [p.detach().reshape(-1) for _, p in pairs]
        if isinstance(snapshot, torch.Tensor):
            return [snapshot.detach().reshape(-1)]
        raise TypeError(f"snapshot must be a tensor or nn.Module, got {type(snapshot).__name__}")

    def _bind(self, views: list[torch.Tensor]) -> None:
        n = sum(v.numel() for v in views)
        if self.n_params is None:
            self.n_params = n
            self.dtype = views[0].dtype
            self.device = views[0].device
            width = n if self.config.sketch_dim is None else self.config.sketch_dim
            # Sketched rows are tiny, so they are kept in float64: dots become exact.
            ring_dtype = self.dtype if self.config.sketch_dim is None else torch.float64
            self.ring = torch.zeros(self.config.window + 1, width, dtype=ring_dtype,
                                    device=self.device)
            if self.config.sketch_dim is not None:
                self.sketch = CountSketch(n, self.config.sketch_dim, self.config.sketch_seed,
                                          self.device)
        elif n != self.n_params:
            raise ValueError(f"snapshot has {n} parameters, the monitor was started with {self.n_params}")
        if views[0].device != self.device:  # e.g. state restored on the CPU, model on CUDA
            self.device = views[0].device
            self.ring = self.ring.to(self.device)
            if self.prev is not None:
                self.prev = self.prev.to(self.device)
            if self.sketch is not None:
                self.sketch = CountSketch(n, self.sketch.dim, self.sketch.seed, self.device)

    # ------------------------------------------------------------------ P-length work
    def _write_row(self, views, slot: int) -> float:
        """Form δ = θ − θ_prev into ring[slot] (or its sketch); return ‖δ‖² exactly."""
        row = self.ring[slot]
        if self.sketch is None:
            off = 0
            for v in views:
                n = v.numel()
                torch.sub(v, self.prev[off:off + n], out=row[off:off + n])
                off += n
            return math.nan  # the self dot product below gives it
        out2 = torch.zeros(2 * self.sketch.dim, dtype=self.dtype, device=self.device)
        norm2 = torch.zeros((), dtype=torch.float64, device=self.device)
        off = 0
        for v in views:
            for a in range(0, v.numel(), CountSketch.CHUNK):
                chunk = v[a:a + CountSketch.CHUNK]
                delta = chunk - self.prev[off + a:off + a + chunk.numel()]
                self.sketch.accumulate(out2, delta, off + a)
                norm2 += torch.dot(delta, delta).double()
            off += v.numel()
        row.copy_(CountSketch.finish(out2).double())
        return float(norm2)

    def floor_rtol(self) -> float | None:
        """Relative eigenvalue floor matching how the Gram was accumulated (see MonitorConfig)."""
        if self.ring is None or self.ring.dtype == torch.float64 or self.config.accumulate == "float64":
            return None  # float64 accumulation: gram.RANK_RTOL·w
        return float(torch.finfo(self.ring.dtype).eps) * math.sqrt(self.config.block)

    def _dots(self, slot: int) -> np.ndarray:
        """ring @ ring[slot] with float64 accumulation across blocks.

        "block": one matrix-vector product per block in the snapshot dtype (few, large ops:
        this stays near the bandwidth bound even when the CPU is oversubscribed). "float64":
        each block is upcast into a reused float64 scratch that stays in cache, so products
        and sums are exact to float64.
        """
        ring, x = self.ring, self.ring[slot]
        if ring.dtype == torch.float64:
            return (ring @ x).cpu().numpy()
        block = self.config.block
        if self.config.accumulate == "block":
            parts = [ring[:, a:a + block] @ x[a:a + block] for a in range(0, ring.shape[1], block)]
            return torch.stack(parts).double().sum(0).cpu().numpy()
        rows = ring.shape[0]
        if self._scratch is None or self._scratch.device != ring.device:
            self._scratch = torch.empty(rows + 1, block, dtype=torch.float64, device=ring.device)
        acc = torch.zeros(rows, dtype=torch.float64, device=ring.device)
        for a in range(0, ring.shape[1], block):
            n = min(block, ring.shape[1] - a)
            scratch = self._scratch[:, :n]
            scratch[:rows].copy_(ring[:, a:a + n])
            scratch[rows].copy_(x[a:a + n])
            acc += scratch[:rows] @ scratch[rows]
        return acc.cpu().numpy()

    def _keep_snapshot(self, views) -> None:
        off = 0
        for v in views:
            self.prev[off:off + v.numel()].copy_(v)
            off += v.numel()

    # ------------------------------------------------------------------ public
    def observe(self, snapshot, *, step: int, lr: float | None = None) -> dict | None:
        views = self._views(snapshot)
        self._bind(views)
        if self.prev is None:
            self.prev = torch.empty(self.n_params, dtype=self.dtype, device=self.device)
            self._keep_snapshot(views)
            return None

        t0 = time.perf_counter()
        window = self.config.window
        slot = next(s for s in range(window + 1) if s not in self.slots)
        exact_norm2 = self._write_row(views, slot)
        dots = self._dots(slot)  # moving the result to the host synchronises the device
        gram_ms = (time.perf_counter() - t0) * 1e3
        norm2 = dots[slot] if math.isnan(exact_norm2) else exact_norm2

        if not (math.isfinite(norm2) and np.isfinite(dots).all()):
            self.prev = None  # θ_prev is suspect too; the next finite snapshot re-seeds
            row = _nan_row(len(self.slots))
            row.update(step=int(step), lr=math.nan if lr is None else float(lr),
                       update_norm=math.nan, gram_ms=gram_ms, nonfinite=True)
            return row

        self.gram[slot, :] = dots
        self.gram[:, slot] = dots
        self._keep_snapshot(views)

        old = list(self.slots)
        new = (old + [slot])[-window:]
        self.slots = new
        floor = self.floor_rtol()
        lam, _ = gram_eigh(self.gram[np.ix_(new, new)], floor)
        prev_lam, self.prev_lam = self.prev_lam, lam
        if len(new) < 2:
            return None

        row = spectrum_features(lam, self.n_params)
        union = old + [slot]  # the previous window, then the new row
        pos = {s: i for i, s in enumerate(union)}
        union_gram = self.gram[np.ix_(union, union)]
        old_idx, new_idx = [pos[s] for s in old], [pos[s] for s in new]
        row.update(time_features(lam, prev_lam, union_gram, old_idx, new_idx, row["k_star"],
                                 row["gap"], lr, floor))
        row.update(
            step=int(step),
            lr=math.nan if lr is None else float(lr),
            update_norm=math.sqrt(max(0.0, norm2)),
            gram_ms=gram_ms,
            nonfinite=False,
        )
        return row

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically (tensors moved to the CPU)."""
        return {
            "config": asdict(self.config),
            "n_params": self.n_params,
            "names": self.names,
            "dtype": None if self.dtype is None else str(self.dtype).removeprefix("torch."),
            "prev": None if self.prev is None else self.prev.cpu().clone(),
            "ring": None if self.ring is None else self.ring.cpu().clone(),
            "gram": self.gram.copy(),
            "slots": list(self.slots),
            "prev_lam": None if self.prev_lam is None else self.prev_lam.copy(),
        }

    def load_state_dict(self, state: dict, device: str | torch.device | None = None) -> None:
        if MonitorConfig(**state["config"]) != self.config:
            raise ValueError("monitor state was saved with a different MonitorConfig: "
                             f"{state['config']} vs {asdict(self.config)}")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.n_params = state["n_params"]
        self.names = state["names"]
        self.dtype = None if state["dtype"] is None else getattr(torch, state["dtype"])
        self.device = dev if self.n_params is not None else None
        self.prev = None if state["prev"] is None else state["prev"].to(dev)
        self.ring = None if state["ring"] is None else state["ring"].to(dev)
        self.gram = np.array(state["gram"], dtype=np.float64)
        self.slots = list(state["slots"])
        self.prev_lam = None if state["prev_lam"] is None else np.array(state["prev_lam"])
        self.sketch = None
        if self.config.sketch_dim is not None and self.n_params is not None:
            self.sketch = CountSketch(self.n_params, self.config.sketch_dim,
                                      self.config.sketch_seed, dev)
