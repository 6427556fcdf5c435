"""Scorecard of the Spectral Edge Thesis predictions that a sweep can test (DESIGN.md 1.3).

Each ``check_*`` function takes plain per-run arrays (lists with one array per run) and returns a
:class:`Prediction` with the measured numbers and a verdict PASS / FAIL / NOT-TESTABLE. The
top-level :func:`scorecard` takes :class:`RunData` records (one per trial, built by the
aggregation from the ``features`` and ``evals`` columns of docs/CONTRACTS.md) and runs them all.

Where the paper's checking script (``mini_gpt/theory_experiment_match.py``, thesis-notes
section 6) gives an operational definition, it is followed and cited; where it gives none, or
one that cannot fail, the operationalisation here is stated in the check's docstring and in the
``reason`` of the result, with every threshold a named keyword argument fixed in advance.
Verdicts across runs treat the *run* as the independent unit: windows of one run overlap
(W − 1 shared rows) and are far from independent.

Units: steps are optimizer steps; σ are singular values of the update window; g (``gap``) is in
σ units; g23 in Gram-eigenvalue (σ²) units; R, α, 𝒜 and the BBP ratio are dimensionless.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats as _sps

from .events import g23_precedence, grok_step as _grok_step, memorization_step as _memo_step
from .stats import (
    detrend_linear,
    fisher_exact_2x2,
    lagged_correlation,
    linear_fit,
    mode_int,
    moving_average,
    nearest_values,
    pearson_r,
    proportion,
)

__all__ = [
    "PASS",
    "FAIL",
    "NOT_TESTABLE",
    "Prediction",
    "RunData",
    "ThreePhase",
    "three_phase_pattern",
    "gap_flow_points",
    "check_k_star_optimizer",
    "check_bbp_vacuous",
    "check_stability_ordering",
    "check_three_phase",
    "check_gap_loss_correlation",
    "check_gap_flow_damping",
    "check_adiabatic_regimes",
    "check_precedence",
    "scorecard",
]

PASS, FAIL, NOT_TESTABLE = "PASS", "FAIL", "NOT-TESTABLE"

ArrayLike = Any  # a 1-D numeric sequence


@dataclass(frozen=True)
class Prediction:
    """One scorecard line. ``measured`` holds plain Python numbers/strings/lists/dicts."""

    name: str
    claim: str
    measured: dict
    verdict: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _f(x: Any) -> float | None:
    """Plain float for reports (None for missing)."""
    if x is None:
        return None
    return float(x)


def _arr(x: ArrayLike | None, n: int | None = None) -> np.ndarray:
    if x is None:
        return np.full(n or 0, np.nan)
    if isinstance(x, np.ndarray) and x.dtype != object:
        return x.astype(float).ravel()
    # lists / object arrays may hold None for a null cell (Polars → numpy of a nullable column)
    return np.asarray([np.nan if v is None else v for v in np.asarray(x, dtype=object).ravel()], dtype=float)


def _rows(x: Any, n: int) -> list[np.ndarray]:
    """Per-window vectors (sigma, alpha) as a list of 1-D float arrays without NaN padding.
    Accepts a list of sequences (None → empty) or a 2-D array padded with NaN."""
    if x is None:
        return [np.empty(0) for _ in range(n)]
    out = []
    for row in x:
        if row is None:
            out.append(np.empty(0))
            continue
        r = np.asarray(row, dtype=float).ravel()
        if r.size and np.isnan(r[-1]):  # strip trailing NaN padding of a 2-D array
            keep = np.flatnonzero(~np.isnan(r))
            r = r[: keep[-1] + 1] if keep.size else np.empty(0)
        out.append(r)
    if len(out) != n:
        raise ValueError(f"expected {n} per-window rows, got {len(out)}")
    return out


def _median(x: Sequence[float]) -> float:
    a = np.asarray(x, dtype=float)
    a = a[~np.isnan(a)]
    return float(np.median(a)) if a.size else math.nan


# --------------------------------------------------------------------------------------------
# Run record
# --------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """One trial's columns, as the aggregation reads them (docs/CONTRACTS.md names).

    Feature columns (n windows, any order; sorted by ``step`` here): ``step``; ``sigma`` (n rows,
    each the descending σ of that window — shorter while the window fills); ``k_star``
    (1-based); ``gap_ratio``; ``gap``; ``g23``; ``alpha`` (n rows); ``adiabatic``;
    ``bbp_ratio``. Eval columns (m evaluations): ``eval_step``, ``test_loss``, ``grok_acc``,
    ``memo_acc``. Missing columns may be None (treated as all-NaN).

    ``grok_step`` / ``memorization_step``: None means "compute from grok_acc / memo_acc" (first
    eval with accuracy ≥ 0.95 / 0.99); if the accuracies never cross, they stay None = the run
    did not grok / memorise within its budget.
    """

    trial_id: str
    workload: str = ""
    optimizer: str = ""
    weight_decay: float = math.nan
    seed: int | None = None
    step: ArrayLike = ()
    sigma: Any = None
    k_star: ArrayLike | None = None
    gap_ratio: ArrayLike | None = None
    gap: ArrayLike | None = None
    g23: ArrayLike | None = None
    alpha: Any = None
    adiabatic: ArrayLike | None = None
    bbp_ratio: ArrayLike | None = None
    eval_step: ArrayLike = ()
    test_loss: ArrayLike | None = None
    grok_acc: ArrayLike | None = None
    memo_acc: ArrayLike | None = None
    grok_step: int | None = None
    memorization_step: int | None = None

    def __post_init__(self) -> None:
        step = np.asarray(self.step, dtype=np.int64).ravel()
        n = step.size
        order = np.argsort(step, kind="stable")
        self.step = step[order]
        for name in ("k_star", "gap_ratio", "gap", "g23", "adiabatic", "bbp_ratio"):
            col = _arr(getattr(self, name), n)
            if col.size != n:
                raise ValueError(f"{self.trial_id}: column {name} has {col.size} rows, step has {n}")
            setattr(self, name, col[order])
        for name in ("sigma", "alpha"):
            rows = _rows(getattr(self, name), n)
            setattr(self, name, [rows[i] for i in order])

        estep = np.asarray(self.eval_step, dtype=np.int64).ravel()
        m = estep.size
        eorder = np.argsort(estep, kind="stable")
        self.eval_step = estep[eorder]
        for name in ("test_loss", "grok_acc", "memo_acc"):
            col = _arr(getattr(self, name), m)
            if col.size != m:
                raise ValueError(f"{self.trial_id}: column {name} has {col.size} rows, eval_step has {m}")
            setattr(self, name, col[eorder])
        if self.grok_step is None and m:
            self.grok_step = _grok_step(self.eval_step, self.grok_acc)
        if self.memorization_step is None and m:
            self.memorization_step = _memo_step(self.eval_step, self.memo_acc)

    @property
    def full_windows(self) -> np.ndarray:
        """Boolean mask of windows holding the run's largest number of rows (the window is
        full). All True when ``sigma`` is absent (the filling phase cannot be told apart)."""
        lens = np.array([r.size for r in self.sigma])
        if lens.size == 0 or lens.max() == 0:
            return np.ones(self.step.size, dtype=bool)
        return lens == lens.max()

    @property
    def final_val_loss(self) -> float:
        """Last finite test loss (by eval step); NaN if none."""
        v = self.test_loss[np.isfinite(self.test_loss)]
        return float(v[-1]) if v.size else math.nan


# --------------------------------------------------------------------------------------------
# (a) optimizer-dependent gap position
# --------------------------------------------------------------------------------------------


def check_k_star_optimizer(
    optimizer: Sequence[str],
    workload: Sequence[str],
    k_star: Sequence[ArrayLike],
    final_val_loss: Sequence[float],
    loss_rtol: float = 0.10,
) -> Prediction:
    """Muon → k* = 1, AdamW → k* = 2 on the same model at comparable validation loss.

    Per run: modal k* over the windows given (pass full windows only). Per (workload,
    optimizer) arm: the mode of the run modes and the median final validation loss. A workload
    is compared when it has both a Muon and an AdamW arm whose median final losses differ by
    ≤ ``loss_rtol`` relative to the smaller (comparable, the premise of the claim). PASS iff
    every compared workload shows Muon k* = 1 and AdamW k* = 2. NOT-TESTABLE without both
    optimisers on one workload, or when no pair reaches comparable loss.
    """
    name = "optimizer_dependent_k_star"
    claim = "Muon gives k* = 1 and AdamW k* = 2 on the same model at comparable validation loss"
    arms: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: {"k": [], "loss": []})
    for opt, wl, ks, loss in zip(optimizer, workload, k_star, final_val_loss, strict=True):
        k = mode_int(ks)
        arms[(str(wl), str(opt).lower())]["k"].append(k)
        arms[(str(wl), str(opt).lower())]["loss"].append(float(loss))
    workloads = sorted({wl for wl, _ in arms})
    per_wl: dict[str, dict] = {}
    for wl in workloads:
        if (wl, "muon") not in arms or (wl, "adamw") not in arms:
            continue
        entry = {}
        for opt in ("muon", "adamw"):
            ks = [k for k in arms[(wl, opt)]["k"] if k is not None]
            entry[f"{opt}_k_star"] = mode_int(ks)
            entry[f"{opt}_final_val_loss"] = _median(arms[(wl, opt)]["loss"])
            entry[f"{opt}_runs"] = len(arms[(wl, opt)]["k"])
        lm, la = entry["muon_final_val_loss"], entry["adamw_final_val_loss"]
        entry["comparable_loss"] = bool(
            math.isfinite(lm) and math.isfinite(la) and abs(lm - la) <= loss_rtol * min(lm, la)
        )
        per_wl[wl] = entry
    measured = {"workloads": per_wl, "loss_rtol": loss_rtol}
    if not per_wl:
        return Prediction(name, claim, measured, NOT_TESTABLE,
                          "needs runs with both Muon and AdamW on the same workload")
    compared = {wl: e for wl, e in per_wl.items() if e["comparable_loss"]}
    if not compared:
        return Prediction(name, claim, measured, NOT_TESTABLE,
                          f"Muon and AdamW never reach comparable validation loss (within {loss_rtol:.0%})")
    ok = all(e["muon_k_star"] == 1 and e["adamw_k_star"] == 2 for e in compared.values())
    detail = "; ".join(f"{wl}: Muon k*={e['muon_k_star']}, AdamW k*={e['adamw_k_star']}"
                       for wl, e in compared.items())
    return Prediction(name, claim, measured, PASS if ok else FAIL, detail)


# --------------------------------------------------------------------------------------------
# (b) BBP vacuous
# --------------------------------------------------------------------------------------------


def check_bbp_vacuous(bbp_ratio: Sequence[ArrayLike], threshold: float = 20.0) -> Prediction:
    """σ_W / d_crit ≫ 1 (predicted 20–300×): every eigenvalue is signal.

    Per run: median of the finite ratios over its windows. PASS iff the median over runs is
    ≥ ``threshold`` (the low end of the predicted range). Also reported: the minimum over all
    windows and the fraction of windows above 1 (the literal BBP detectability condition).
    Caveat worth knowing when reading the number: with ν² estimated from the bottom half of the
    same spectrum, the ratio is ≈ (σ_W/rms of the bottom half)·(P/(W−1))^{1/4}, so it grows
    with the parameter count P mostly by construction (≈ 11 at P = 1.3·10⁵, W = 10).
    """
    name = "bbp_vacuous"
    claim = "sigma_W / d_crit >> 1 (20-300x): BBP detection is vacuous"
    medians, all_vals = [], []
    for r in bbp_ratio:
        a = _arr(r)
        a = a[~np.isnan(a)]  # +inf (d_crit = 0 < σ_W) is the extreme of "vacuous", keep it
        if a.size:
            medians.append(float(np.median(a)))
            all_vals.append(a)
    if not medians:
        return Prediction(name, claim, {"n_runs": 0}, NOT_TESTABLE, "no bbp_ratio values")
    v = np.concatenate(all_vals)
    med = float(np.median(medians))
    measured = {
        "n_runs": len(medians),
        "n_windows": int(v.size),
        "median_of_run_medians": med,
        "min": float(v.min()),
        "max": float(v.max()),
        "fraction_windows_above_1": float(np.mean(v > 1.0)),
        "threshold": threshold,
    }
    verdict = PASS if med >= threshold else FAIL
    return Prediction(name, claim, measured, verdict,
                      f"median over runs {med:.3g} {'>=' if verdict == PASS else '<'} {threshold:g}; "
                      f"min over windows {v.min():.3g}")


# --------------------------------------------------------------------------------------------
# (c) stability ordering
# --------------------------------------------------------------------------------------------


def check_stability_ordering(alpha: Sequence[Sequence[ArrayLike]], k_star: Sequence[ArrayLike]) -> Prediction:
    """α_dominant > α_gap > α_sub for the Davis–Kahan stability coefficients.

    Per window with gap position k (1-based, that window's k*): dominant = mean α_j, j < k;
    gap = mean of α_k and α_{k+1} (the two eigenvalues bounding the gap, as the checking script
    groups them); sub = mean α_j, j > k+1. Only windows where all three groups exist and are
    finite count (k ≥ 2, at least k+2 modes): with k* = 1 there are no dominant modes and the
    ordering is undefined. Per run: mean over its windows; across runs: mean of run means (each
    run weighs the same). PASS iff dominant > gap > sub. NOT-TESTABLE when no window qualifies.
    """
    name = "stability_ordering"
    claim = "alpha_dominant > alpha_gap > alpha_sub (Davis-Kahan stability)"
    run_means = []
    partial = []  # gap vs sub where only k* = 1 windows exist, reported for information
    n_windows = 0
    for rows, ks in zip(alpha, k_star, strict=True):
        ks = _arr(ks)
        if len(rows) != ks.size:
            raise ValueError("alpha and k_star must have the same number of windows per run")
        dom, gap, sub, gsub = [], [], [], []
        for a, k in zip(rows, ks):
            a = np.asarray(a, dtype=float)
            if not math.isfinite(k):
                continue
            k = int(k)
            if k < 1 or a.size < k + 2 or not np.all(np.isfinite(a)):
                continue
            g_, s_ = float(a[k - 1:k + 1].mean()), float(a[k + 1:].mean())
            gsub.append((g_, s_))
            if k >= 2:
                dom.append(float(a[: k - 1].mean()))
                gap.append(g_)
                sub.append(s_)
        if dom:
            run_means.append((np.mean(dom), np.mean(gap), np.mean(sub)))
            n_windows += len(dom)
        if gsub:
            partial.append(np.mean(np.array(gsub), axis=0))
    measured: dict[str, Any] = {"n_runs": len(run_means), "n_windows": n_windows}
    if partial:
        p = np.mean(np.array(partial), axis=0)
        measured["alpha_gap_all_windows"] = float(p[0])
        measured["alpha_sub_all_windows"] = float(p[1])
    if not run_means:
        return Prediction(name, claim, measured, NOT_TESTABLE,
                          "no window with k* >= 2 and k*+2 modes: the dominant group is empty "
                          "(k* = 1 everywhere leaves only alpha_gap vs alpha_sub)")
    d, g, s = (float(x) for x in np.mean(np.array(run_means), axis=0))
    measured.update(alpha_dominant=d, alpha_gap=g, alpha_sub=s)
    ok = d > g > s
    return Prediction(name, claim, measured, PASS if ok else FAIL,
                      f"dominant {d:.3f}, gap {g:.3f}, sub {s:.3f}")


# --------------------------------------------------------------------------------------------
# (d) rise - plateau - collapse of R
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreePhase:
    """Result of :func:`three_phase_pattern` (indices refer to the input R sequence)."""

    present: bool
    n: int
    window: int
    slope_threshold: float
    rise_end: int | None
    collapse_start: int | None
    reason: str


def three_phase_pattern(gap_ratio: ArrayLike, min_points: int = 11, top_band: float = 0.1) -> ThreePhase:
    """Does R(t) rise, plateau, then collapse?

    Ingredients from the checking script: S = moving average of R with window
    w = max(1, min(5, n // 3)); slopes dS; slope threshold 0.01·std(R); n > 10. The script
    itself only prints approximate phase boundaries and never decides, so the decision rule
    here is edgesweep's, written so that it can fail:

    * top region: indices where S is within ``top_band`` (10 %) of the peak amplitude,
      S ≥ top − top_band·(top − max(S_first, S_last)); a = its first index, b = its last;
    * rise: a > 0, top − S_first ≥ std(R), and more than half of the slopes before a exceed
      +threshold;
    * collapse: b < last index, top − S_last ≥ std(R), and more than half of the slopes from b
      on are below −threshold;
    * plateau: the top region lasts at least one smoothing window (b − a ≥ w: a one-point
      spike, which the moving average spreads over exactly w points, is not a plateau) and at
      least half as long as the shorter of rise (a) and collapse (last index − b): a triangle,
      whose rounded top is short relative to its flanks, is rise + collapse without a plateau.

    Non-finite R values are dropped (order kept). Indices in the result refer to R (the
    smoothed index plus w // 2, the centre of the smoothing window, as the script reports).
    """
    r = _arr(gap_ratio)
    r = r[np.isfinite(r)]
    n = int(r.size)
    if n < min_points:
        return ThreePhase(False, n, 0, math.nan, None, None, f"too short ({n} < {min_points} windows)")
    w = max(1, min(5, n // 3))
    S = moving_average(r, w)
    sd = float(np.std(r))
    thr = 0.01 * sd
    if sd == 0.0:
        return ThreePhase(False, n, w, thr, None, None, "R is constant")
    d = np.diff(S)
    last = S.size - 1
    top = float(S.max())
    band = np.flatnonzero(S >= top - top_band * (top - max(S[0], S[-1])))
    a, b = int(band[0]), int(band[-1])
    off = w // 2
    res = dict(n=n, window=w, slope_threshold=thr, rise_end=a + off, collapse_start=b + off)
    if a == 0 or top - S[0] < sd or np.mean(d[:a] > thr) <= 0.5:
        return ThreePhase(False, reason="no rise into the top region", **res)
    if b == last or top - S[-1] < sd or np.mean(d[b:] < -thr) <= 0.5:
        return ThreePhase(False, reason="no collapse after the top region", **res)
    if b - a < w or b - a < 0.5 * min(a, last - b):
        return ThreePhase(False, reason="top region too short for a plateau (spike or triangle)", **res)
    return ThreePhase(True, reason="rise, plateau, collapse", **res)


def check_three_phase(gap_ratio: Sequence[ArrayLike], min_fraction: float = 0.5) -> Prediction:
    """R rises, plateaus, then collapses (Prop 8.1; 'universal three-phase pattern').

    Per run: :func:`three_phase_pattern` (runs with ≤ 10 windows are not evaluated). PASS iff
    the pattern is present in more than ``min_fraction`` of the evaluated runs. The exact
    interval of that fraction is reported.
    """
    name = "three_phase_gap_ratio"
    claim = "the gap ratio R rises, plateaus, then collapses"
    results = [three_phase_pattern(r) for r in gap_ratio]
    evaluated = [x for x in results if x.window > 0]
    if not evaluated:
        return Prediction(name, claim, {"n_runs": 0}, NOT_TESTABLE, "no run has more than 10 windows")
    k = sum(x.present for x in evaluated)
    p = proportion(k, len(evaluated))
    measured = {"n_runs": len(evaluated), "n_present": k, "fraction": p.rate, "ci": [p.lo, p.hi],
                "reasons": [x.reason for x in evaluated]}
    ok = p.rate > min_fraction
    return Prediction(name, claim, measured, PASS if ok else FAIL,
                      f"pattern in {k}/{len(evaluated)} runs (needs > {min_fraction:.0%})")


# --------------------------------------------------------------------------------------------
# (e) gap ratio vs validation loss
# --------------------------------------------------------------------------------------------


def check_gap_loss_correlation(
    feature_steps: Sequence[ArrayLike],
    gap_ratio: Sequence[ArrayLike],
    eval_steps: Sequence[ArrayLike],
    val_loss: Sequence[ArrayLike],
    threshold: float = 0.3,
    max_lag: int = 5,
) -> Prediction:
    """|corr(R, validation loss)| > 0.3, as the checking script measures it.

    Per run: validation loss aligned to each window by the nearest eval step; both series
    linearly detrended in the index; zero-lag Pearson r0 and lagged r at lags −max_lag..max_lag
    (lag > 0: R leads the loss). The verdict uses the zero-lag |r0| (the number the script's
    summary table tests), not the best lag — picking the best of 11 lags inflates |r|. PASS iff
    the median |r0| over runs exceeds ``threshold``. Runs with < 6 aligned windows are skipped.
    """
    name = "gap_loss_correlation"
    claim = "|corr(R, validation loss)| > 0.3 (detrended)"
    per_run = []
    for fs, R, es, vl in zip(feature_steps, gap_ratio, eval_steps, val_loss, strict=True):
        fs, R = _arr(fs), _arr(R)
        es, vl = _arr(es), _arr(vl)
        ok_e = np.isfinite(es) & np.isfinite(vl)
        if not ok_e.any():
            continue
        loss = nearest_values(es[ok_e], vl[ok_e], fs)
        keep = np.isfinite(R) & np.isfinite(loss)
        R_, L_ = R[keep], loss[keep]
        if R_.size < 6 or np.std(R_) == 0 or np.std(L_) == 0:
            continue
        Rd, Ld = detrend_linear(R_), detrend_linear(L_)
        lags = lagged_correlation(Rd, Ld, max_lag)
        r0 = lags[0]
        if not math.isfinite(r0):
            continue
        best_lag, best = 0, abs(r0)  # the script's scan: keep lag 0 unless a lag is strictly better
        for lag in range(-max_lag, max_lag + 1):
            if lag != 0 and math.isfinite(lags[lag]) and abs(lags[lag]) > best:
                best_lag, best = lag, abs(lags[lag])
        per_run.append({"r0": r0, "best_lag": best_lag, "best_abs_r": best, "n": int(R_.size)})
    if not per_run:
        return Prediction(name, claim, {"n_runs": 0}, NOT_TESTABLE,
                          "no run has >= 6 windows with both R and a validation loss")
    abs_r0 = [abs(x["r0"]) for x in per_run]
    med = float(np.median(abs_r0))
    measured = {
        "n_runs": len(per_run),
        "median_abs_r0": med,
        "median_r0": float(np.median([x["r0"] for x in per_run])),
        "median_best_abs_r": float(np.median([x["best_abs_r"] for x in per_run])),
        "best_lag_mode": mode_int([x["best_lag"] for x in per_run]),
        "runs": per_run,
        "threshold": threshold,
    }
    verdict = PASS if med > threshold else FAIL
    return Prediction(name, claim, measured, verdict,
                      f"median |r0| = {med:.3f} {'>' if verdict == PASS else '<='} {threshold}")


# --------------------------------------------------------------------------------------------
# (f) gap-flow damping
# --------------------------------------------------------------------------------------------


def gap_flow_points(
    steps: ArrayLike, gap: ArrayLike | None = None, sigma: Sequence[ArrayLike] | None = None,
    k_star: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(g_t, dg/dt) at interior windows by centred finite difference (per optimizer step).

    With ``sigma`` and ``k_star`` (the checking script's way), g at t−1, t, t+1 are all taken at
    the *same* position k = k*(t): g = σ_k − σ_{k+1}, so a k* jump is not mistaken for a gap
    change. Otherwise the ``gap`` column is differenced as is. Non-finite points are dropped.
    """
    s = _arr(steps)
    if sigma is not None and k_star is not None:
        ks = _arr(k_star)
        g_out, d_out = [], []
        for i in range(1, s.size - 1):
            if not math.isfinite(ks[i]):
                continue
            k = int(ks[i])
            rows = [np.asarray(sigma[j], dtype=float) for j in (i - 1, i, i + 1)]
            if k < 1 or any(r.size <= k for r in rows):
                continue
            gp, gc, gn = (float(r[k - 1] - r[k]) for r in rows)
            dt = s[i + 1] - s[i - 1]
            if dt <= 0:
                continue
            g_out.append(gc)
            d_out.append((gn - gp) / dt)
        g, d = np.array(g_out), np.array(d_out)
    else:
        gg = _arr(gap, s.size)
        if s.size < 3:
            return np.empty(0), np.empty(0)
        g = gg[1:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = (gg[2:] - gg[:-2]) / (s[2:] - s[:-2])
    keep = np.isfinite(g) & np.isfinite(d)
    return g[keep], d[keep]


def check_gap_flow_damping(
    steps: Sequence[ArrayLike],
    gap: Sequence[ArrayLike] | None = None,
    sigma: Sequence[Sequence[ArrayLike]] | None = None,
    k_star: Sequence[ArrayLike] | None = None,
    alpha_level: float = 0.05,
    min_runs: int = 5,
) -> Prediction:
    """Gap-flow damping: corr(g, dg/dt) < 0 (Thm 5.4; the paper's likely failed prediction).

    Per run: r = corr(g, dg/dt) over interior windows (:func:`gap_flow_points`) and the R² of
    the linear fit dg/dt = a·g + b (the checking script). The script calls any r < 0 a match,
    which noise passes half of the time; here the run is the unit and the sign must be
    consistent: PASS iff the median run r < 0 and a one-sided sign test (runs with r < 0 vs
    0.5) has p < ``alpha_level``. Fewer than ``min_runs`` usable runs (5 is the smallest n at
    which 5/5 reaches p < 0.05) is NOT-TESTABLE. Note: for a stationary, time-reversible
    fluctuation the centred-difference correlation is ≈ 0 even with damping; only relaxing
    (non-stationary) gaps give r < 0 — part of why the paper saw r ≈ 0.
    """
    name = "gap_flow_damping"
    claim = "gap-flow damping: corr(g, dg/dt) < 0"
    n = len(steps)
    per_run = []
    for i in range(n):
        g, d = gap_flow_points(
            steps[i],
            None if gap is None else gap[i],
            None if sigma is None else sigma[i],
            None if k_star is None else k_star[i],
        )
        r = pearson_r(g, d)
        if not math.isfinite(r):
            continue
        fit = linear_fit(g, d)
        per_run.append({"r": r, "r2": fit.r2, "slope": fit.slope, "n": int(g.size)})
    measured: dict[str, Any] = {"n_runs": len(per_run), "runs": per_run}
    if len(per_run) < min_runs:
        return Prediction(name, claim, measured, NOT_TESTABLE,
                          f"{len(per_run)} usable runs; a sign test needs >= {min_runs}")
    rs = np.array([x["r"] for x in per_run])
    n_neg = int(np.sum(rs < 0))
    p = float(_sps.binomtest(n_neg, rs.size, 0.5, alternative="greater").pvalue)
    med_r = float(np.median(rs))
    measured.update(median_r=med_r, median_r2=float(np.median([x["r2"] for x in per_run])),
                    n_negative=n_neg, sign_test_p=p, alpha_level=alpha_level)
    ok = med_r < 0 and p < alpha_level
    return Prediction(name, claim, measured, PASS if ok else FAIL,
                      f"median r = {med_r:.3f}, {n_neg}/{rs.size} runs negative, sign-test p = {p:.3g}")


# --------------------------------------------------------------------------------------------
# (g) adiabatic regimes
# --------------------------------------------------------------------------------------------


def check_adiabatic_regimes(
    steps: Sequence[ArrayLike],
    adiabatic: Sequence[ArrayLike],
    grok_steps: Sequence[int | None],
    memorization_steps: Sequence[int | None],
    halfwidth: int = 2,
) -> Prediction:
    """𝒜 regimes: 𝒜 is larger around a phase transition than on the plateau before it.

    Definitions (per grokking run; Δ = median spacing of its feature steps):
    transition = windows with |step − grok step| ≤ halfwidth·Δ (5 windows at halfwidth 2);
    plateau = the memorisation plateau, windows with memorisation step + halfwidth·Δ < step <
    grok step − halfwidth·Δ. Runs without a grok or memorisation step, or with < 2 plateau or
    < 1 transition windows, are skipped. Medians are used (𝒜 ∝ 1/g² is heavy-tailed).

    The thesis states absolute regimes (𝒜 ≪ 1 plateau, ~1 transition, ≫ 1 forgetting), but the
    operational 𝒜 = ‖ΔG‖_F/(η g²) carries a 1/η and a per-window-shift ΔG, so its absolute
    level depends on the logging interval and learning rate. The verdict therefore tests the
    unit-free ordering: PASS iff the median over runs of median(𝒜 transition)/median(𝒜 plateau)
    exceeds 1. The absolute medians and the fraction of plateau windows with 𝒜 < 1 are reported.
    """
    name = "adiabatic_regimes"
    claim = "adiabatic parameter: small on the plateau, larger at the phase transition"
    per_run = []
    plateau_all, trans_all = [], []
    for s, A, gs, ms in zip(steps, adiabatic, grok_steps, memorization_steps, strict=True):
        if gs is None or ms is None:
            continue
        s, A = _arr(s), _arr(A)
        ok = ~np.isnan(A) & np.isfinite(s)  # 𝒜 = +inf (gap closed) is a real, extreme value
        s, A = s[ok], A[ok]
        if s.size < 3:
            continue
        delta = float(np.median(np.diff(np.sort(s))))
        h = halfwidth * delta
        trans = A[np.abs(s - gs) <= h]
        plat = A[(s > ms + h) & (s < gs - h)]
        if trans.size < 1 or plat.size < 2:
            continue
        mt, mp = float(np.median(trans)), float(np.median(plat))
        ratio = mt / mp if mp > 0 else (math.inf if mt > 0 else math.nan)
        per_run.append({"median_transition": mt, "median_plateau": mp, "ratio": ratio,
                        "n_transition": int(trans.size), "n_plateau": int(plat.size)})
        plateau_all.append(plat)
        trans_all.append(trans)
    if not per_run:
        return Prediction(name, claim, {"n_runs": 0}, NOT_TESTABLE,
                          "no grokking run with a memorisation plateau and a transition window")
    ratios = np.array([x["ratio"] for x in per_run])
    med_ratio = float(np.median(ratios[~np.isnan(ratios)])) if np.any(~np.isnan(ratios)) else math.nan
    p_all, t_all = np.concatenate(plateau_all), np.concatenate(trans_all)
    measured = {
        "n_runs": len(per_run),
        "median_ratio_transition_to_plateau": med_ratio,
        "median_plateau": float(np.median(p_all)),
        "median_transition": float(np.median(t_all)),
        "fraction_plateau_below_1": float(np.mean(p_all < 1.0)),
        "halfwidth_windows": halfwidth,
        "runs": per_run,
    }
    ok = med_ratio > 1.0
    return Prediction(name, claim, measured, PASS if ok else FAIL,
                      f"median transition/plateau ratio {med_ratio:.3g} over {len(per_run)} runs "
                      f"(ordering test; absolute levels reported, not judged)")


# --------------------------------------------------------------------------------------------
# (h) grokking precedence count
# --------------------------------------------------------------------------------------------


def check_precedence(
    weight_decay: Sequence[float],
    grokked: Sequence[bool],
    preceded: Sequence[bool],
    decline_peak_to_final: Sequence[float] | None = None,
    control_max_rate: float = 1.0 / 24.0,
    conf: float = 0.95,
) -> Prediction:
    """'Gap dynamics precede every grokking event: 24/24 with weight decay, 0/24 (v2: 1/24)
    without.'

    Arms: weight decay > 0 and = 0 (controls). preceded must already mean "grokked and
    g23 decline > 1.5" (:func:`edgesweep.spectral.events.g23_precedence`). PASS iff among
    weight-decay runs that grokked every one is preceded (and at least one grokked), and —
    when controls exist — the control rate preceded/n is ≤ ``control_max_rate`` (1/24, the
    v2 count). Reported: counts with exact intervals, the Fisher exact test between the arms
    (preceded vs not, all runs), and the caveat numbers: peak-to-final g23 declines of the
    controls, which are large although controls count as negatives only by not grokking.
    """
    name = "grokking_precedence"
    claim = "g23 declines > 1.5x before every grokking event (24/24 with weight decay, 0-1/24 without)"
    wd = np.asarray(weight_decay, dtype=float)
    gk = np.asarray(grokked, dtype=bool)
    pr = np.asarray(preceded, dtype=bool)
    if not (wd.shape == gk.shape == pr.shape):
        raise ValueError("weight_decay, grokked, preceded must have one entry per run")
    if np.any(pr & ~gk):
        raise ValueError("a run cannot be preceded without grokking")
    dec = None if decline_peak_to_final is None else np.asarray(decline_peak_to_final, dtype=float)

    def arm(mask: np.ndarray) -> dict:
        n, k_g, k_p = int(mask.sum()), int((gk & mask).sum()), int((pr & mask).sum())
        p_all, p_grok = proportion(k_p, n, conf), proportion(k_p, k_g, conf)
        d = {"n": n, "grokked": k_g, "preceded": k_p,
             "preceded_rate": p_all.rate, "preceded_ci": [p_all.lo, p_all.hi],
             "preceded_among_grokked_ci": [p_grok.lo, p_grok.hi]}
        if dec is not None:
            v = dec[mask]
            v = v[~np.isnan(v)]
            d["decline_peak_to_final"] = (
                {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())} if v.size else None
            )
        return d

    has_wd, has_ctrl = wd > 0, wd == 0
    measured: dict[str, Any] = {"weight_decay": arm(has_wd), "control": arm(has_ctrl)}
    a, ctrl = measured["weight_decay"], measured["control"]
    if a["n"] and ctrl["n"]:
        odds, p = fisher_exact_2x2(a["preceded"], a["n"] - a["preceded"], ctrl["preceded"], ctrl["n"] - ctrl["preceded"])
        measured["fisher_odds_ratio"], measured["fisher_p"] = odds, p
    if a["n"] == 0:
        return Prediction(name, claim, measured, NOT_TESTABLE, "no run with weight decay > 0")
    if a["grokked"] == 0:
        return Prediction(name, claim, measured, NOT_TESTABLE, "no weight-decay run grokked")
    wd_ok = a["preceded"] == a["grokked"]
    parts = [f"weight decay: {a['preceded']}/{a['grokked']} grokking runs preceded ({a['n']} runs)"]
    ok = wd_ok
    if ctrl["n"]:
        ctrl_ok = ctrl["preceded"] / ctrl["n"] <= control_max_rate + 1e-12
        ok = ok and ctrl_ok
        parts.append(f"controls: {ctrl['preceded']}/{ctrl['n']} preceded ({ctrl['grokked']} grokked)")
        if ctrl.get("decline_peak_to_final"):
            parts.append(f"control peak-to-final g23 decline median {ctrl['decline_peak_to_final']['median']:.3g}x")
    else:
        parts.append("no control arm: the contrast is not tested")
    return Prediction(name, claim, measured, PASS if ok else FAIL, "; ".join(parts))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def scorecard(runs: Sequence[RunData], precedence_ratio: float = 1.5) -> list[Prediction]:
    """All testable predictions for a sweep, in a fixed order (a)–(h).

    Spectral checks (a)–(g) use full windows only (see :attr:`RunData.full_windows`): a window
    that is still filling has fewer rows and its spectrum is not comparable. The precedence
    count (h) uses every window with a finite g23, like the Dyck/SCAN script's adaptive windows.
    """
    fw = [r.full_windows for r in runs]
    steps = [r.step[m] for r, m in zip(runs, fw)]
    out = [
        check_k_star_optimizer(
            [r.optimizer for r in runs], [r.workload for r in runs],
            [r.k_star[m] for r, m in zip(runs, fw)], [r.final_val_loss for r in runs],
        ),
        check_bbp_vacuous([r.bbp_ratio[m] for r, m in zip(runs, fw)]),
        check_stability_ordering(
            [[a for a, keep in zip(r.alpha, m) if keep] for r, m in zip(runs, fw)],
            [r.k_star[m] for r, m in zip(runs, fw)],
        ),
        check_three_phase([r.gap_ratio[m] for r, m in zip(runs, fw)]),
        check_gap_loss_correlation(
            steps, [r.gap_ratio[m] for r, m in zip(runs, fw)],
            [r.eval_step for r in runs], [r.test_loss for r in runs],
        ),
    ]
    # (f): the script's fixed-k differences need sigma and k*; fall back to the gap column.
    have_sigma = all(any(x.size for x in r.sigma) for r in runs) and len(runs) > 0
    if have_sigma:
        out.append(check_gap_flow_damping(
            steps, sigma=[[x for x, keep in zip(r.sigma, m) if keep] for r, m in zip(runs, fw)],
            k_star=[r.k_star[m] for r, m in zip(runs, fw)],
        ))
    else:
        out.append(check_gap_flow_damping(steps, gap=[r.gap[m] for r, m in zip(runs, fw)]))
    out.append(check_adiabatic_regimes(
        steps, [r.adiabatic[m] for r, m in zip(runs, fw)],
        [r.grok_step for r in runs], [r.memorization_step for r in runs],
    ))
    prec = [g23_precedence(r.step, r.g23, r.grok_step, ratio=precedence_ratio) for r in runs]
    out.append(check_precedence(
        [r.weight_decay for r in runs], [p.grokked for p in prec], [p.preceded for p in prec],
        [p.decline_peak_to_final for p in prec],
    ))
    return out
