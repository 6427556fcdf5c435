"""Spectral features of a small Gram matrix — the only matrix edgesweep ever decomposes.

Everything here is pure numpy on W×W (or (W+1)×(W+1)) float64 matrices. The P-length work
(forming the Gram from update rows) lives in :mod:`edgesweep.spectral.window` and
:mod:`edgesweep.spectral.monitor`; both end up here, so the stateless path and the streaming
monitor share one definition of every feature (DESIGN.md §1.2).

Conventions
-----------
* ``lam`` are Gram eigenvalues λ_1 ≥ … ≥ λ_w ≥ 0 (clipped at 0), ``sigma = sqrt(lam)`` the
  singular values of the window X (w × P).
* Indices in outputs (``k_star``) are 1-based, as in the paper.
* Eigenvalues below ``RANK_RTOL · w · λ_1`` are set to exactly 0: the Gram eigen-solver
  cannot resolve them (its error is ~ε·λ_1), and reporting rounding noise as a tiny singular
  value would turn σ_j/σ_{j+1} into an arbitrary large number. Duplicate or zero rows thus give
  σ_{j+1} = 0 exactly, and the ratio above it is +inf (a defined, documented value).
"""

from __future__ import annotations

import math

import numpy as np

# 64 ulps of float64 per window row: far above eigh's backward error on an exactly
# singular Gram (~1e-16·λ_1), far below any singular value a float64 window can resolve.
RANK_RTOL = 64 * np.finfo(np.float64).eps


def gram_eigh(gram: np.ndarray, floor_rtol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD Gram, descending, with rank clipping.

    gram: (w, w) float64. Returns (lam (w,), vecs (w, w)) with lam[0] ≥ … ≥ lam[-1] ≥ 0,
    columns of ``vecs`` the matching eigenvectors. Eigenvalues ≤ floor_rtol·λ_1 are set to 0;
    the default RANK_RTOL·w suits a Gram accumulated in float64; a Gram whose entries carry a
    larger relative error (float32 dot products) needs a floor at that error.
    """
    g = np.asarray(gram, dtype=np.float64)
    g = 0.5 * (g + g.T)  # exact symmetry: the incremental Gram is symmetric up to writes
    lam, vecs = np.linalg.eigh(g)
    lam = lam[::-1].copy()
    vecs = vecs[:, ::-1].copy()
    top = lam[0] if lam.size else 0.0
    rtol = RANK_RTOL * max(1, lam.size) if floor_rtol is None else max(floor_rtol, RANK_RTOL)
    floor = rtol * max(top, 0.0)
    lam[lam <= floor] = 0.0
    return lam, vecs


def _consecutive_ratios(sigma: np.ndarray) -> np.ndarray:
    """σ_j/σ_{j+1} for j = 1..w−1: +inf where only the denominator is 0, NaN for 0/0."""
    num, den = sigma[:-1], sigma[1:]
    out = np.full(num.shape, np.nan)
    pos = den > 0
    out[pos] = num[pos] / den[pos]
    out[(~pos) & (num > 0)] = np.inf
    return out


def _first_argmax(scores: np.ndarray) -> int | None:
    """0-based index of the first maximum, ignoring NaN; None when all are NaN."""
    if scores.size == 0 or np.all(np.isnan(scores)):
        return None
    return int(np.nanargmax(scores))


def spectrum_features(lam: np.ndarray, n_params: int) -> dict:
    """Features that depend on one window's spectrum only.

    lam: (w,) descending clipped Gram eigenvalues, w ≥ 2. n_params: P, the length of a row
    before any sketching (the BBP threshold is a statement about the full P).

    Returns sigma, k_star, k_star_weighted (1-based; j = w excluded by construction),
    gap_ratio, gap, g23 (NaN when w < 3), bbp_ratio.
    """
    lam = np.asarray(lam, dtype=np.float64)
    w = lam.size
    if w < 2:
        raise ValueError(f"a window needs at least 2 rows, got {w}")
    sigma = np.sqrt(lam)
    ratios = _consecutive_ratios(sigma)  # length w-1: j = w has no σ_{w+1}
    k0 = _first_argmax(ratios)

    total = float(sigma.sum())
    kw0 = None
    if total > 0:
        weights = sigma[:-1] / total
        with np.errstate(invalid="ignore"):
            weighted = weights * ratios  # 0·inf can't occur: inf needs σ_j > 0
        kw0 = _first_argmax(weighted)

    if k0 is None:
        gap_ratio, gap = math.nan, math.nan
    else:
        gap_ratio = float(ratios[k0])
        gap = float(sigma[k0] - sigma[k0 + 1])

    g23 = float(lam[1] - lam[2]) if w >= 3 else math.nan

    # BBP threshold d_crit = ν (P (w−1))^{1/4}, ν² estimated from the lower half of the
    # spectrum (j > w/2), exactly as the thesis' checking script does.
    tail = lam[w // 2:]
    nu = math.sqrt(float(tail.mean()) / n_params)
    d_crit = nu * (n_params * (w - 1)) ** 0.25
    s_min = float(sigma[-1])
    if d_crit > 0:
        bbp = s_min / d_crit
    else:
        bbp = math.inf if s_min > 0 else math.nan

    return {
        "window": int(w),
        "sigma": sigma.tolist(),
        "k_star": None if k0 is None else k0 + 1,
        "k_star_weighted": None if kw0 is None else kw0 + 1,
        "gap_ratio": gap_ratio,
        "gap": gap,
        "g23": g23,
        "bbp_ratio": float(bbp),
    }


def spectral_change(lam: np.ndarray, prev_lam: np.ndarray | None) -> float:
    """‖ΔG‖_F as the paper operationalises it: √Σ_j (λ_j(t) − λ_j(t−1))².

    Spectra of different length (a filling window) are compared after zero-padding the
    shorter one — a missing row contributes a zero eigenvalue.
    """
    if prev_lam is None:
        return math.nan
    a = np.asarray(lam, dtype=np.float64)
    b = np.asarray(prev_lam, dtype=np.float64)
    n = max(a.size, b.size)
    a = np.pad(a, (0, n - a.size))
    b = np.pad(b, (0, n - b.size))
    return float(np.sqrt(np.sum((a - b) ** 2)))


def stability_alpha(lam: np.ndarray, delta_gram_fro: float, n_dims: int) -> list[float]:
    """Davis–Kahan stability coefficients α_j = max(0, 1 − ‖ΔG‖_F² / gap_j²).

    lam: (w,) descending Gram eigenvalues; n_dims: the length of a row (P, or d for a
    sketch). gap_j is the distance from λ_j to its nearest other eigenvalue *of the operator
    XᵀX* (n_dims × n_dims), whose spectrum is λ_1..λ_w plus n_dims − w zeros. So whenever
    n_dims > w, 0 is a neighbour of every λ_j; it is the nearest one only for λ_w, whose gap
    is min(λ_{w−1} − λ_w, λ_w) — a small last eigenvalue is unstable against the null space,
    not just against λ_{w−1}. A degenerate eigenvalue (gap_j = 0) has no identifiable
    eigenvector, so α_j = 0 there. NaN ‖ΔG‖ → all NaN.
    """
    lam = np.asarray(lam, dtype=np.float64)
    if not math.isfinite(delta_gram_fro):
        return [math.nan] * lam.size
    diff = np.abs(lam[:, None] - lam[None, :])
    np.fill_diagonal(diff, np.inf)
    gaps = diff.min(axis=1)
    if n_dims > lam.size:  # the operator's zero eigenvalues are neighbours too
        gaps = np.minimum(gaps, np.abs(lam))
    alpha = np.zeros(lam.size)
    pos = gaps > 0
    alpha[pos] = np.maximum(0.0, 1.0 - delta_gram_fro**2 / gaps[pos] ** 2)
    return alpha.tolist()


def adiabatic_parameter(delta_gram_fro: float, lr: float | None, gap: float) -> float:
    """𝒜 = ‖ΔG‖_F / (η g²) with g the intra-signal gap σ_{k*} − σ_{k*+1} (not a gradient)."""
    if lr is None or not (lr > 0) or not math.isfinite(delta_gram_fro) or math.isnan(gap):
        return math.nan
    denom = lr * gap * gap
    if denom == 0:
        return math.inf if delta_gram_fro > 0 else math.nan
    return float(delta_gram_fro / denom)


def _subspace_basis(union_gram: np.ndarray, rows: list[int], k: int,
                    floor_rtol: float | None = None) -> np.ndarray | None:
    """Coefficients C (m × k) with Yᵀ C an orthonormal basis of the top-k right singular
    subspace of the window made of ``rows`` of Y (Y the m stacked rows, union_gram = Y Yᵀ).

    v_j = X_Sᵀ u_j / σ_j, so in Y-coefficients C[rows, j] = u_j / σ_j. None when the window
    has fewer than k nonzero singular values (the subspace is not defined).
    """
    lam, vecs = gram_eigh(union_gram[np.ix_(rows, rows)], floor_rtol)
    if lam.size < k or lam[k - 1] <= 0:
        return None
    coef = np.zeros((union_gram.shape[0], k))
    coef[rows, :] = vecs[:, :k] / np.sqrt(lam[:k])
    return coef


def subspace_rotation(union_gram: np.ndarray, old_rows: list[int], new_rows: list[int],
                      k: int | None, floor_rtol: float | None = None) -> float:
    """sin of the largest principal angle between the top-k right-singular subspaces
    (in R^P) of two windows, from the Gram of the union of their rows only.

    union_gram: (m, m) Gram of all rows in either window; old_rows/new_rows index it.
    Exact: no P-length vector is touched again, because both subspaces lie in the row span.
    """
    if k is None or not old_rows or not new_rows:
        return math.nan
    ca = _subspace_basis(union_gram, old_rows, k, floor_rtol)
    cb = _subspace_basis(union_gram, new_rows, k, floor_rtol)
    if ca is None or cb is None:
        return math.nan
    # Residual of the old basis after projecting on the new subspace; its largest
    # singular value (in the K-metric) is sin θ_max. Computing the residual directly avoids
    # the cancellation in √(1 − cos²) for small rotations.
    resid = ca - cb @ (cb.T @ union_gram @ ca)
    m = resid.T @ union_gram @ resid
    top = float(np.linalg.eigvalsh(0.5 * (m + m.T))[-1])
    return float(min(1.0, math.sqrt(max(0.0, top))))


def exact_operator_change(union_gram: np.ndarray, old_rows: list[int],
                          new_rows: list[int]) -> float:
    """‖X_newᵀX_new − X_oldᵀX_old‖_F — the exact change of the P×P second-moment operator
    whose nonzero spectrum is the Gram's. With D = 1[new] − 1[old] it equals
    √(Σ_ij D_i D_j K_ij²) (K the union Gram), so it also costs no P-length work.
    """
    d = np.zeros(union_gram.shape[0])
    d[list(new_rows)] += 1.0
    d[list(old_rows)] -= 1.0
    val = float(d @ (union_gram**2) @ d)
    if not math.isfinite(val):
        return math.nan  # K² overflowed (‖δ‖ ≳ 1e77): say so rather than let max() make it 0
    return math.sqrt(max(0.0, val))


def time_features(lam: np.ndarray, prev_lam: np.ndarray | None, union_gram: np.ndarray,
                  old_rows: list[int], new_rows: list[int], k_star: int | None, gap: float,
                  lr: float | None, n_dims: int, floor_rtol: float | None = None) -> dict:
    """The features that compare a window with the previous one (DESIGN.md §1.2), all from
    the two spectra and the Gram of the union of their rows: delta_gram_fro (spectral),
    delta_gram_fro_exact, alpha, subspace_rotation and adiabatic. One definition for the
    stateless path and the streaming monitor. n_dims: the row length (P, or d when sketched),
    which says how many zero eigenvalues the operator XᵀX has (see :func:`stability_alpha`).
    prev_lam None (no previous window: a stream's or a restarted window's first row) gives
    NaN for every feature that compares spectra."""
    dg = spectral_change(lam, prev_lam)
    return {
        "delta_gram_fro": dg,
        "delta_gram_fro_exact": exact_operator_change(union_gram, old_rows, new_rows),
        "alpha": stability_alpha(lam, dg, n_dims),
        "subspace_rotation": subspace_rotation(union_gram, old_rows, new_rows, k_star, floor_rtol),
        "adiabatic": adiabatic_parameter(dg, lr, gap),
    }
