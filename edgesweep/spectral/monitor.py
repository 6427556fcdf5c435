"""The streaming spectral monitor: snapshots in, one feature row per snapshot out.

Memory and cost (DESIGN.md §1.1): the exact monitor holds the previous snapshot θ_prev and a
ring of W+1 update rows *on the snapshot's device*. A new snapshot costs **one fused pass**
that forms δ = θ − θ_prev into the ring slot, overwrites θ_prev with θ, and accumulates the
W+1 dot products of δ with every ring row (itself included) — float32 loads, float64 products
and sums, so the Gram is exact to float64 (every product of two float32 numbers is exact in
float64). On the CPU this is a compiled kernel (:mod:`.kernels`: numba, multi-threaded over
the trial's CPUs, bit-identical for any thread count); on CUDA, for bfloat16/float16 or without
numba it is a few large torch operations (``torch.sub`` per parameter, then float64 products
over large chunks). The Gram is updated in place — never re-multiplied — and everything after
that works on the (W+1)×(W+1) Gram of the ring in float64:

* the W×W window Gram → σ, k*, gaps, g23, BBP ratio (:mod:`.gram`);
* the (W+1)×(W+1) Gram of the previous and current windows together → the subspace rotation
  and the exact operator change, without touching P-length vectors again.

Why W+1 slots: the slot that is about to be overwritten holds the row that left the window
one snapshot ago; keeping the row that leaves *now* is what makes the rotation exact.

Sketched mode (``sketch_dim = d``): a count-sketch S is linear, S(θ_t − θ_{t−1}) =
Sθ_t − Sθ_{t−1}, so the monitor keeps the previous snapshot's sketch (d float64 numbers)
instead of θ_prev, and a ring of W+1 sketched rows: O(W·d) memory whatever P is, plus the
sketch kernel's bounded buffers (:mod:`.sketch`). The map is recomputed from the coordinate
index, never stored. Because θ_prev is not kept, ``update_norm`` in sketched mode is ‖Sδ‖,
the sketched norm: ‖Sδ‖² is an unbiased estimate of ‖δ‖² (E‖Sδ‖² = ‖δ‖², relative standard
deviation ≤ √(2/d): 14 % at d = 100, 4.5 % at d = 1000), so ‖Sδ‖ scatters about ‖δ‖ by about
half that (≈ 7 % at d = 100). In exact mode it is ‖δ‖ to float64.

Non-finite snapshots: a NaN/inf update row is never put in the window. The monitor returns a
row flagged ``nonfinite=True`` with NaN features and restarts: it forgets θ_prev (or its
sketch), the window's rows and the previous spectrum, so the next finite snapshot re-seeds
(its row is ``None``, like the very first snapshot) and the rows after it form a fresh
window, exactly as at the start of a stream.

Checkpoints: :meth:`SpectralMonitor.state_dict` returns the monitor's own tensors, not copies
(like ``nn.Module.state_dict``): the caller copies — the training loop's checkpoint copies
every tensor to the CPU once — so a checkpoint carries the ring once.
:func:`monitor_state_bytes` gives the size per configuration.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch

from . import kernels
from .config import ATTENTION_PATTERN, MonitorConfig
from .gram import gram_eigh, spectrum_features, time_features
from .sketch import CountSketch

FEATURE_COLUMNS = (
    "step", "window", "sigma", "k_star", "k_star_weighted", "gap_ratio", "gap", "g23",
    "delta_gram_fro", "delta_gram_fro_exact", "adiabatic", "alpha", "subspace_rotation",
    "bbp_ratio", "lr", "update_norm", "gram_ms", "nonfinite",
)

STATE_FORMAT = 2  # 2: sketched states keep Sθ_prev and a map fingerprint instead of θ_prev

# Temporaries of the torch path's float64 products on CUDA: chunks this large keep the
# launches few (~P/3·10⁶ of them) at a bounded scratch.
_CUDA_SCRATCH_BYTES = 256 << 20
_NPARTS = 64  # fixed work partition of the CPU kernel (results independent of thread count)


def monitor_state_bytes(n_params: int, config: MonitorConfig, itemsize: int = 4) -> int:
    """Bytes of the P- or d-length tensors in a monitor state (what a checkpoint carries
    beyond a few hundred bytes of bookkeeping): exact mode (W+1)·P + P numbers in the
    snapshot dtype (``itemsize``: 4 for float32); sketched mode (W+1)·d + d float64."""
    rows = config.window + 1
    if config.sketch_dim is None:
        return (rows + 1) * n_params * itemsize
    return (rows + 1) * config.sketch_dim * 8


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
        self.prev: torch.Tensor | None = None         # exact: θ_prev, flat, snapshot dtype
        self.prev_sketch: torch.Tensor | None = None  # sketched: Sθ_prev, (d,) float64
        self.ring: torch.Tensor | None = None         # (W+1, P) snapshot dtype, or (W+1, d) float64
        self.gram = np.zeros((config.window + 1,) * 2)  # Gram of the ring slots, float64
        self.slots: list[int] = []                    # ring slots of the current window, oldest first
        self.prev_lam: np.ndarray | None = None       # spectrum of the previous window
        self.sketch: CountSketch | None = None
        self._scratch: torch.Tensor | None = None     # float64 chunk buffer of the torch path

    # ------------------------------------------------------------------ inputs
    def _views(self, snapshot) -> list[torch.Tensor]:
        if isinstance(snapshot, torch.nn.Module):
            pairs = select_parameters(snapshot, self.config.params)
            names = [n for n, _ in pairs]
            if self.names is not None and names != self.names:
                raise ValueError("the monitored parameter set changed between snapshots")
            self.names = names
            # contiguous: a no-op for parameters; the kernels read flat, dense views
            return [p.detach().reshape(-1).contiguous() for _, p in pairs]
        if isinstance(snapshot, torch.Tensor):
            return [snapshot.detach().reshape(-1).contiguous()]
        raise TypeError(f"snapshot must be a tensor or nn.Module, got {type(snapshot).__name__}")

    def _bind(self, views: list[torch.Tensor]) -> None:
        n = sum(v.numel() for v in views)
        sketched = self.config.sketch_dim is not None
        if self.n_params is None:
            self.n_params = n
            self.dtype = views[0].dtype
            self.device = views[0].device
            width = self.config.sketch_dim if sketched else n
            # Sketched rows are tiny and accumulated in float64: kept in float64.
            self.ring = torch.zeros(self.config.window + 1, width,
                                    dtype=torch.float64 if sketched else self.dtype,
                                    device=self.device)
        elif n != self.n_params:
            raise ValueError(f"snapshot has {n} parameters, the monitor was started with {self.n_params}")
        if views[0].device != self.device:  # e.g. state restored on the CPU, model on CUDA
            self.device = views[0].device
            self.ring = self.ring.to(self.device)
            if self.prev is not None:
                self.prev = self.prev.to(self.device)
            if self.prev_sketch is not None:
                self.prev_sketch = self.prev_sketch.to(self.device)
        if sketched and (self.sketch is None or self.sketch.device != self.device):
            self.sketch = CountSketch(n, self.config.sketch_dim, self.config.sketch_seed, self.device)
        if kernels.backend_for(self.device, views) == "numba":
            kernels.warm_up(views[0].dtype)  # compile/load once per process, not inside a row

    # ------------------------------------------------------------------ P-length work
    def _exact_row(self, views, slot: int) -> np.ndarray:
        """One pass: ring[slot] = θ − θ_prev, θ_prev = θ; returns ring @ ring[slot] in float64."""
        rows = self.ring.shape[0]
        if kernels.backend_for(self.device, views) == "numba" and views[0].dtype == self.ring.dtype:
            nk = kernels.numba_kernels()
            ring, prev = self.ring.numpy(), self.prev.numpy()
            dots = np.zeros(rows)
            off = 0
            with kernels.threads():
                for v in views:  # one call per parameter tensor: no gather copy (measured)
                    dots += nk.exact_update(v.numpy(), prev, ring, slot, off, self.config.block, _NPARTS)
                    off += v.numel()
            return dots
        row = self.ring[slot]
        off = 0
        for v in views:
            n = v.numel()
            torch.sub(v, self.prev[off:off + n], out=row[off:off + n])
            self.prev[off:off + n].copy_(v)
            off += n
        return self._torch_dots(slot)

    def _torch_dots(self, slot: int) -> np.ndarray:
        """ring @ ring[slot] with float64 products and sums, in few large operations: chunks of
        the ring are upcast into a reused float64 buffer (on the CPU a cache-sized
        ``config.block``, on CUDA up to 256 MiB) and multiplied there."""
        ring, x = self.ring, self.ring[slot]
        if ring.dtype == torch.float64:
            return (ring @ x).cpu().numpy()
        rows, width = ring.shape
        chunk = self.config.block
        if ring.device.type != "cpu":
            chunk = max(chunk, _CUDA_SCRATCH_BYTES // (8 * (rows + 1)))
        chunk = min(chunk, width)
        if self._scratch is None or self._scratch.device != ring.device or self._scratch.shape[1] != chunk:
            self._scratch = torch.empty(rows + 1, chunk, dtype=torch.float64, device=ring.device)
        acc = torch.zeros(rows, dtype=torch.float64, device=ring.device)
        for a in range(0, width, chunk):
            n = min(chunk, width - a)
            scratch = self._scratch[:, :n]
            scratch[:rows].copy_(ring[:, a:a + n])
            scratch[rows].copy_(x[a:a + n])
            acc.addmv_(scratch[:rows], scratch[rows])
        return acc.cpu().numpy()

    def _restart(self) -> None:
        self.prev = None
        self.prev_sketch = None
        self.slots = []
        self.prev_lam = None
        # The non-finite row stays in its ring slot, and every later snapshot's dots run over
        # all W+1 slots: unless cleared it poisons each new row (the window never refills once
        # the NaN sits in any slot but the one the next row takes). One pass; a rare event.
        if self.ring is not None:
            self.ring.zero_()
        self.gram[:] = 0.0

    # ------------------------------------------------------------------ public
    def observe(self, snapshot, *, step: int, lr: float | None = None) -> dict | None:
        views = self._views(snapshot)
        self._bind(views)
        window = self.config.window
        if self.device.type == "cuda":
            # Kernels still queued from the optimiser step would otherwise be timed as the
            # monitor's (gram_ms); snapshots are rare, so one wait costs nothing that matters.
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        if self.sketch is not None:
            current = self.sketch.sketch(views)
            if self.prev_sketch is None:
                self.prev_sketch = current
                return None
            slot = next(s for s in range(window + 1) if s not in self.slots)
            torch.sub(current, self.prev_sketch, out=self.ring[slot])  # S(θ−θ_prev) = Sθ − Sθ_prev
            self.prev_sketch = current
            dots = (self.ring @ self.ring[slot]).cpu().numpy()
        else:
            if self.prev is None:
                self.prev = torch.empty(self.n_params, dtype=self.dtype, device=self.device)
                off = 0
                for v in views:
                    self.prev[off:off + v.numel()].copy_(v)
                    off += v.numel()
                return None
            slot = next(s for s in range(window + 1) if s not in self.slots)
            dots = self._exact_row(views, slot)  # moving the result to the host synchronises
        gram_ms = (time.perf_counter() - t0) * 1e3
        norm2 = float(dots[slot])

        if not np.isfinite(dots).all():
            # Restart: θ_prev is suspect too, and rows before the gap are not consecutive with
            # rows after it. The next finite snapshot re-seeds and the rows after it form a
            # fresh window, with no previous spectrum to compare the first one with.
            self._restart()
            row = _nan_row(0)
            row.update(step=int(step), lr=math.nan if lr is None else float(lr),
                       update_norm=math.nan, gram_ms=gram_ms, nonfinite=True)
            return row

        self.gram[slot, :] = dots
        self.gram[:, slot] = dots
        old = list(self.slots)
        new = (old + [slot])[-window:]
        self.slots = new
        lam, _ = gram_eigh(self.gram[np.ix_(new, new)])
        prev_lam, self.prev_lam = self.prev_lam, lam
        if len(new) < 2:
            return None

        row = spectrum_features(lam, self.n_params)
        union = old + [slot]  # the previous window, then the new row
        pos = {s: i for i, s in enumerate(union)}
        union_gram = self.gram[np.ix_(union, union)]
        old_idx, new_idx = [pos[s] for s in old], [pos[s] for s in new]
        row.update(time_features(lam, prev_lam, union_gram, old_idx, new_idx, row["k_star"],
                                 row["gap"], lr, self.ring.shape[1]))
        row.update(
            step=int(step),
            lr=math.nan if lr is None else float(lr),
            update_norm=math.sqrt(max(0.0, norm2)),  # sketched mode: ‖Sδ‖ (module docstring)
            gram_ms=gram_ms,
            nonfinite=False,
        )
        return row

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically.

        Like ``nn.Module.state_dict``, the tensors are the monitor's own (on its device), not
        copies: the caller copies them — the training loop's checkpoint copies every tensor
        to the CPU once — so the ring is copied once per checkpoint, not twice. The small
        numpy arrays are copied here (the Gram is updated in place, and a copying caller
        need not know numpy).
        """
        return {
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "n_params": self.n_params,
            "names": self.names,
            "dtype": None if self.dtype is None else str(self.dtype).removeprefix("torch."),
            "prev": self.prev,
            "prev_sketch": self.prev_sketch,
            "ring": self.ring,
            "gram": self.gram.copy(),
            "slots": list(self.slots),
            "prev_lam": None if self.prev_lam is None else self.prev_lam.copy(),
            "sketch": None if self.sketch is None else self.sketch.fingerprint(),
        }

    def load_state_dict(self, state: dict, device: str | torch.device | None = None) -> None:
        """Restore a :meth:`state_dict`. The tensors are copied (onto ``device``, default the
        CPU; the first snapshot moves them to its own device), so the given dict stays the
        caller's. A sketched state is checked against the map this code builds for its
        (P, d, seed): rows sketched by another map live in another space, so a restore with a
        different map (or a state from before the map was recorded) raises ValueError."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # an old state's accumulate: block
            saved = MonitorConfig(**state["config"])
        if saved != self.config:
            raise ValueError("monitor state was saved with a different MonitorConfig: "
                             f"{state['config']} vs {asdict(self.config)}")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        n_params = state["n_params"]
        sketch = None
        if self.config.sketch_dim is not None and n_params is not None:
            sketch = CountSketch(n_params, self.config.sketch_dim, self.config.sketch_seed, dev)
            expected, got = sketch.fingerprint(), state.get("sketch")
            if got != expected:
                raise ValueError(
                    "monitor state was saved with a different count-sketch map "
                    f"(saved {got!r}, this code builds {expected!r}); its window rows cannot be "
                    "continued with this map — start the monitor afresh")

        def copied(t):
            return None if t is None else t.to(dev, copy=True).contiguous()

        self.n_params = n_params
        self.names = state["names"]
        self.dtype = None if state["dtype"] is None else getattr(torch, state["dtype"])
        self.device = dev if n_params is not None else None
        self.prev = copied(state["prev"]) if sketch is None else None
        self.prev_sketch = copied(state.get("prev_sketch"))
        self.ring = copied(state["ring"])
        self.gram = np.array(state["gram"], dtype=np.float64)
        self.slots = list(state["slots"])
        self.prev_lam = None if state["prev_lam"] is None else np.array(state["prev_lam"])
        self.sketch = sketch
        self._scratch = None
