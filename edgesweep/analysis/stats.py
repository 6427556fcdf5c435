"""Small exact and descriptive statistics of the analysis.

Pure functions on numpy arrays / Python numbers (scipy where it already does the job). Every
function accepts plain sequences, ignores nothing silently unless its docstring says so
(non-finite pairs are dropped by the correlation helpers, because feature columns use NaN for
"undefined", docs/CONTRACTS.md), and returns plain Python numbers, so results serialise to
Parquet or JSON without numpy scalars leaking out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# scipy is imported where it is used, not here: importing scipy.signal and scipy.stats takes
# ~1.3 s, and every `edgesweep` command imports this module (through the spec's grok rule) —
# a mistyped argument or `edgesweep status` should not wait for it.

__all__ = ["clopper_pearson", "fisher_exact_2x2", "Proportion", "proportion", "LeadTimeSummary",
           "lead_time_summary", "pearson_r", "LinearFit", "linear_fit", "moving_average",
           "detrend_linear", "lagged_correlation", "nearest_values", "mode_int"]


# --------------------------------------------------------------------------------------------
# Exact binomial / 2x2 inference
# --------------------------------------------------------------------------------------------


def _check_count(k: int, n: int) -> tuple[int, int]:
    if isinstance(k, bool) or isinstance(n, bool):
        raise TypeError("k and n must be integers, not bool")
    if int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return k, n


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided confidence interval for a binomial proportion.

    k successes out of n trials; ``conf`` the coverage (0 < conf < 1). Each tail gets
    (1 − conf)/2. lo = Beta⁻¹((1−conf)/2; k, n−k+1), hi = Beta⁻¹(1−(1−conf)/2; k+1, n−k),
    with the exact edges lo = 0 when k = 0 and hi = 1 when k = n (the beta quantile is
    undefined there). n = 0 carries no information: (0.0, 1.0).

    Example: 24/24 → (0.8575, 1.0), since lo = 0.025^(1/24).
    """
    k, n = _check_count(k, n)
    if not 0.0 < conf < 1.0:
        raise ValueError(f"conf must be in (0, 1), got {conf}")
    if n == 0:
        return 0.0, 1.0
    tail = (1.0 - conf) / 2.0
    from scipy import stats as _sps

    lo = 0.0 if k == 0 else float(_sps.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(_sps.beta.ppf(1.0 - tail, k + 1, n - k))
    return lo, hi


def fisher_exact_2x2(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Two-sided Fisher exact test on the table [[a, b], [c, d]].

    Rows are the two groups (e.g. weight decay > 0 / = 0), columns outcome yes / no
    (e.g. preceded / not). Returns (sample odds ratio a·d/(b·c), two-sided p-value), exactly
    as ``scipy.stats.fisher_exact``: the odds ratio is inf when b·c = 0 < a·d, 0 when
    a·d = 0 < b·c, NaN when a row or column is empty (p = 1 then).

    Example: 24/24 preceded vs 0/24 → (inf, 2/C(48, 24) ≈ 6.2e-14).
    """
    for name, v in zip("abcd", (a, b, c, d)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise ValueError(f"cell {name} must be a non-negative integer, got {v!r}")
    from scipy import stats as _sps

    res = _sps.fisher_exact([[int(a), int(b)], [int(c), int(d)]], alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class Proportion:
    """k of n with its exact interval; ``rate`` is NaN when n = 0."""

    k: int
    n: int
    rate: float
    lo: float
    hi: float
    conf: float



def proportion(k: int, n: int, conf: float = 0.95) -> Proportion:
    """k/n with its Clopper–Pearson interval (rate NaN for n = 0)."""
    k, n = _check_count(k, n)
    lo, hi = clopper_pearson(k, n, conf)
    return Proportion(k=k, n=n, rate=(k / n if n else math.nan), lo=lo, hi=hi, conf=conf)


# --------------------------------------------------------------------------------------------
# Descriptive summaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadTimeSummary:
    """Distribution of lead times (steps): count, quartiles, extremes. NaN fields when n = 0.

    Quartiles use numpy's default linear interpolation between order statistics.
    """

    n: int
    median: float
    q25: float
    q75: float
    min: float
    max: float
    mean: float



def lead_time_summary(leads: Sequence[float]) -> LeadTimeSummary:
    """Summarise lead times in optimizer steps (grok step − alarm step); non-finite and None
    entries (runs without a lead) are dropped."""
    x = np.array([np.nan if v is None else v for v in leads], dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        nan = math.nan
        return LeadTimeSummary(0, nan, nan, nan, nan, nan, nan)
    q25, med, q75 = np.percentile(x, [25.0, 50.0, 75.0])
    return LeadTimeSummary(int(x.size), *(float(v) for v in (med, q25, q75, x.min(), x.max(), x.mean())))


def mode_int(values: Sequence[int]) -> int | None:
    """Most common integer (smallest on ties, so the result is deterministic); None if empty.
    Non-finite entries are dropped."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    vals, counts = np.unique(x.astype(np.int64), return_counts=True)
    return int(vals[np.argmax(counts)])  # np.unique sorts, argmax takes the first max


# --------------------------------------------------------------------------------------------
# Correlation and regression helpers
# --------------------------------------------------------------------------------------------


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the finite pairs of x and y (same length n).

    NaN when fewer than 3 finite pairs remain or either variable is constant (a correlation
    of two points is ±1 by construction and says nothing).
    """
    x, y = _finite_pairs(x, y)
    if x.size < 3:
        return math.nan
    dx = x - x.mean()
    dy = y - y.mean()
    sxx = float(dx @ dx)
    syy = float(dy @ dy)
    if sxx <= 0.0 or syy <= 0.0:
        return math.nan
    r = float(dx @ dy) / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))


@dataclass(frozen=True)
class LinearFit:
    """Least-squares fit y ≈ slope·x + intercept on the finite pairs; r2 = 1 − SS_res/SS_tot."""

    slope: float
    intercept: float
    r2: float
    n: int


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Ordinary least squares of y on x (finite pairs, ``scipy.stats.linregress``). NaN fields
    with < 3 pairs or constant x; r2 = 0 when y is constant (nothing to explain), matching the
    checking script."""
    x, y = _finite_pairs(x, y)
    n = int(x.size)
    if n < 3 or float(np.ptp(x)) == 0.0:
        return LinearFit(math.nan, math.nan, math.nan, n)
    from scipy import stats as _sps

    fit = _sps.linregress(x, y)
    r2 = float(fit.rvalue) ** 2 if float(np.ptp(y)) > 0 else 0.0
    return LinearFit(float(fit.slope), float(fit.intercept), r2, n)


def moving_average(x: Sequence[float], window: int) -> np.ndarray:
    """'Valid' moving average: output length n − window + 1, element i the mean of
    x[i : i + window] (what ``np.convolve(x, ones(w)/w, mode='valid')`` in the thesis checking
    script computes). Empty when n < window."""
    x = np.asarray(x, dtype=float).ravel()
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if x.size < window:
        return np.empty(0)
    c = np.cumsum(np.concatenate([[0.0], x]))
    return (c[window:] - c[:-window]) / window


def detrend_linear(y: Sequence[float]) -> np.ndarray:
    """Remove the least-squares line in the *index* (``scipy.signal.detrend``), the checking
    script's detrending before its cross-correlation. Length-preserving; needs finite input."""
    y = np.asarray(y, dtype=float).ravel()
    from scipy import signal as _sig

    return _sig.detrend(y, type="linear") if y.size >= 2 else y - y.mean() if y.size else y.copy()


def lagged_correlation(x: Sequence[float], y: Sequence[float], max_lag: int = 5) -> dict[int, float]:
    """Pearson r between x and y shifted by lag ∈ [−max_lag, max_lag] (index units).

    Convention of the thesis checking script: lag > 0 pairs x[i] with y[i + lag] (x leads y),
    lag < 0 pairs x[i − lag] with y[i]. Lags whose overlap has < 3 points give NaN.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    n = x.size
    out: dict[int, float] = {}
    for lag in range(-max_lag, max_lag + 1):
        if abs(lag) >= n:
            out[lag] = math.nan
        elif lag > 0:
            out[lag] = pearson_r(x[:-lag], y[lag:])
        elif lag < 0:
            out[lag] = pearson_r(x[-lag:], y[:lag])
        else:
            out[lag] = pearson_r(x, y)
    return out


def nearest_values(
    src_steps: Sequence[float], src_values: Sequence[float], query_steps: Sequence[float]
) -> np.ndarray:
    """Value of the source row whose step is nearest to each query step (exact matches win;
    ties between an earlier and a later row take the earlier one). This is how the checking
    script aligns validation loss to spectrum windows. NaN everywhere if the source is empty."""
    s = np.asarray(src_steps, dtype=float).ravel()
    v = np.asarray(src_values, dtype=float).ravel()
    q = np.asarray(query_steps, dtype=float).ravel()
    if s.shape != v.shape:
        raise ValueError("src_steps and src_values must have the same length")
    if s.size == 0:
        return np.full(q.shape, np.nan)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    hi = np.clip(np.searchsorted(s, q, side="left"), 0, s.size - 1)
    lo = np.clip(hi - 1, 0, s.size - 1)
    pick = np.where(np.abs(s[lo] - q) <= np.abs(s[hi] - q), lo, hi)
    return v[pick]
