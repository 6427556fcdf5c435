"""The stateless path: features of one window of update rows (DESIGN.md §1.2)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .gram import gram_eigh, spectrum_features, time_features


def _as_float64(rows) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(rows, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"rows must be a (w, P) matrix, got shape {arr.shape}")
    return arr


def window_features(rows, prev_rows=None, lr: float | None = None) -> dict:
    """Spectral-edge features of the window ``rows`` (w × P, oldest row first, w ≥ 2).

    The Gram X Xᵀ is formed in float64 (input of any float dtype is upcast first, so float32
    rows are compared exactly) and only the w × w Gram is decomposed.

    prev_rows: optionally the previous window (the window one snapshot earlier, which shares
    all but its oldest row with ``rows`` once full, or is ``rows`` minus its newest row while
    filling). With it, the time-dependent features are filled as well: delta_gram_fro,
    delta_gram_fro_exact, alpha, subspace_rotation and, given ``lr``, adiabatic. Without it
    they are NaN.

    Raises ValueError on non-finite input: a window with NaN/inf rows has no defined spectrum;
    nor has one whose Gram overflows float64 (rows of norm above ~1e154 — the streaming monitor
    flags the same window ``nonfinite``). Rows of norm below ~1e-154 underflow to a zero Gram.
    """
    x = _as_float64(rows)
    if x.shape[0] < 2:
        raise ValueError(f"a window needs at least 2 rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("window contains non-finite values (NaN or inf)")
    lam, _ = gram_eigh(_finite_gram(x, "window"))
    out = spectrum_features(lam, n_params=x.shape[1])
    out.update(delta_gram_fro=math.nan, delta_gram_fro_exact=math.nan,
               alpha=[math.nan] * lam.size, subspace_rotation=math.nan, adiabatic=math.nan)
    if prev_rows is None:
        return out

    y = _as_float64(prev_rows)
    if y.shape[1] != x.shape[1] or not np.isfinite(y).all():
        raise ValueError("prev_rows must be a finite (w', P) matrix with the same P")
    prev_lam, _ = gram_eigh(_finite_gram(y, "prev_rows"))
    union = np.vstack([y, x])  # duplicate rows are harmless: the formulas use index sets
    old_idx = list(range(y.shape[0]))
    new_idx = list(range(y.shape[0], union.shape[0]))
    out.update(time_features(lam, prev_lam, _finite_gram(union, "prev_rows with rows"), old_idx, new_idx,
                             out["k_star"], out["gap"], lr, n_dims=x.shape[1]))
    return out


def _finite_gram(x: np.ndarray, what: str) -> np.ndarray:
    """x xᵀ, or ValueError when it overflows float64 (the eigensolver would fail on the inf
    with numpy's LinAlgError, or give inf/NaN features without a word)."""
    with np.errstate(over="ignore", invalid="ignore"):  # checked below, with its own message
        gram = x @ x.T
    if not np.isfinite(gram).all():
        raise ValueError(f"{what} too large: their Gram overflows float64 (a row norm above ~1e154)")
    return gram
