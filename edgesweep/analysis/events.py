"""Per-run events: grok step, memorisation step, and the paper's g23-precedence criterion.

Inputs are the columns of one trial (docs/CONTRACTS.md): eval rows give ``step``, ``grok_acc``,
``memo_acc``; feature rows give ``step`` and ``g23``. A feature row's ``step`` is the step of
the newest snapshot in its window, i.e. the step at which the window *ends*. Rows may arrive in
any order; every function sorts by step (stable) itself. Pure numpy, no I/O.

The criterion (DESIGN.md 1.3, thesis-notes section 3) is *retrospective*: it looks back from a
known grok step. The prospective, causal counterparts live in ``detectors.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "GROKKED", "IMMEDIATE", "CENSORED", "DIVERGED", "DELAY_STEPS", "Generalisation",
    "classify_generalisation",
    "PHASES",
    "phase_of",
    "GROK_THRESHOLD",
    "MEMORIZATION_THRESHOLD",
    "PRECEDENCE_RATIO",
    "grok_step",
    "memorization_step",
    "first_step_at_or_above",
    "PrecedenceResult",
    "g23_precedence",
    "decline_ratio",
]

GROK_THRESHOLD = 0.95  # test accuracy (token / SCAN sequence / multitask min), DESIGN.md 1.3
MEMORIZATION_THRESHOLD = 0.99  # train accuracy
PRECEDENCE_RATIO = 1.5  # g23_early / g23_grok must exceed this (multitask script's "declined")
MONOTONE_TOLERANCE = 1  # Dyck/SCAN script: "monotone" allows <= 1 increase (MONOTONIC_TOL)


def _sorted_columns(steps: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(steps).ravel()
    v = np.asarray(values, dtype=float).ravel()
    if s.shape != v.shape:
        raise ValueError(f"steps and values must have the same length, got {s.size} and {v.size}")
    if s.size and not np.all(np.isfinite(s.astype(float))):
        raise ValueError("steps must be finite")
    order = np.argsort(s, kind="stable")
    return s[order], v[order]


def first_step_at_or_above(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """Smallest step whose value is ≥ threshold (NaN never qualifies); None if none does."""
    s, v = _sorted_columns(steps, values)
    with np.errstate(invalid="ignore"):
        hit = np.flatnonzero(v >= threshold)
    return int(s[hit[0]]) if hit.size else None


def grok_step(steps: Sequence[int], grok_acc: Sequence[float], threshold: float = GROK_THRESHOLD) -> int | None:
    """First evaluation step with ``grok_acc`` ≥ threshold (default 0.95), else None.

    steps: (m,) eval steps; grok_acc: (m,) the accuracy the criterion uses (token accuracy,
    SCAN sequence accuracy, multitask minimum — already chosen by the trainer). "First" means
    the first crossing, not a sustained one: that is the paper's definition, and a later dip
    below the threshold does not move the event.
    """
    return first_step_at_or_above(steps, grok_acc, threshold)


def memorization_step(
    steps: Sequence[int], memo_acc: Sequence[float], threshold: float = MEMORIZATION_THRESHOLD
) -> int | None:
    """First evaluation step with train accuracy (``memo_acc``) ≥ threshold (default 0.99)."""
    return first_step_at_or_above(steps, memo_acc, threshold)


# --------------------------------------------------------------------------------------------
# Delayed generalisation: what "grokking" means here (DESIGN.md 1.3)
# --------------------------------------------------------------------------------------------

GROKKED, IMMEDIATE, CENSORED, DIVERGED = "grokked", "immediate", "censored", "diverged"
#: A run "fits" its training set once train accuracy first reaches this. Not the paper's 0.99:
#: under weight decay train accuracy hovers at 0.90–0.98 for thousands of steps in runs that
#: then grok (pilot, docs/DETECTOR.md), and a 0.99 anchor would call those groks "immediate".
FIT_TRAIN_ACC = 0.9
#: Test accuracy at the fit step must be near chance (< 0.3): a run already at 0.4–0.75 there
#: (mod_sq, Dyck-1) generalises gradually, it does not grok.
NEAR_CHANCE_TEST_ACC = 0.3
#: Steps between fitting and crossing the grok threshold for the generalisation to count as
#: delayed. On the 67-run pilot (benchmarks/grokking_pilot/results.jsonl) this rule finds 37
#: groks with delays of 700–5,350 steps after the fit step and 4 immediate runs (test accuracy
#: 0.36–0.70 at the fit step): any D up to 700 classifies the pilot alike, and it is the
#: near-chance condition that separates the immediate runs; 500 is 10 evaluations at the
#: corpus' eval interval of 50.
DELAY_STEPS = 500


@dataclass(frozen=True)
class Generalisation:
    """How a run generalised: ``outcome`` grokked | immediate | censored | diverged, with the
    fit step (train ≥ FIT_TRAIN_ACC), the grok step (test ≥ threshold), the test accuracy at
    the fit step and the delay grok − fit (None where undefined)."""

    outcome: str
    fit_step: int | None
    grok_step: int | None
    test_acc_at_fit: float
    delay: int | None


def classify_generalisation(steps: Sequence[int], memo_acc: Sequence[float], grok_acc: Sequence[float],
                            threshold: float = GROK_THRESHOLD, diverged: bool = False,
                            delay: int = DELAY_STEPS, fit_acc: float = FIT_TRAIN_ACC,
                            near_chance: float = NEAR_CHANCE_TEST_ACC) -> Generalisation:
    """Classify one run from its evaluations (any order).

    grokked: test accuracy crosses ``threshold`` at least ``delay`` steps after the fit step
    and was below ``near_chance`` at the fit step. immediate: it crosses, but not so. diverged:
    no crossing and the run diverged. censored: no crossing by the run's last evaluation — a
    negative only up to that step. The test accuracy "at the fit step" is the last one measured
    at or before it: an evaluation there without a test accuracy (NaN) must not turn a delayed
    generalisation into an immediate one. When none was measured at or before the fit step,
    nothing shows the run was near chance there, so a crossing is immediate (excluded from the
    benchmark's labels), never grokked.
    """
    s, train = _sorted_columns(steps, memo_acc)
    _, test = _sorted_columns(steps, grok_acc)
    gs = first_step_at_or_above(s, test, threshold)
    fit = first_step_at_or_above(s, train, fit_acc)
    known = np.flatnonzero((s <= fit) & ~np.isnan(test)) if fit is not None else np.array([], dtype=int)
    at_fit = float(test[known[-1]]) if known.size else math.nan
    lag = gs - fit if gs is not None and fit is not None else None
    if gs is None:
        outcome = DIVERGED if diverged else CENSORED
    elif lag is not None and lag >= delay and at_fit < near_chance:
        outcome = GROKKED
    else:
        outcome = IMMEDIATE
    return Generalisation(outcome, fit, gs, at_fit, lag)


PHASES = ("before memorisation", "memorised, not grokked", "after grok")


def phase_of(step: Sequence[int], memorization_step: int | None, grok_step: int | None) -> np.ndarray:
    """Phase index per window step: 0 before memorisation, 1 memorised but not (yet) grokked,
    2 at or after the grok step (:data:`PHASES`). A run that groks without memorising goes 0 → 2."""
    s = np.asarray(step)
    out = np.zeros(s.shape, dtype=np.int64)
    if memorization_step is not None:
        out[s >= memorization_step] = 1
    if grok_step is not None:
        out[s >= grok_step] = 2
    return out


def decline_ratio(early: float, late: float) -> float:
    """early / late for the g23 decline, with the degenerate cases made explicit.

    g23 = σ2² − σ3² ≥ 0 up to rounding, so a non-positive ``late`` means the gap closed
    completely: the decline is +inf when ``early`` > 0 and undefined (NaN) when early ≤ 0 too.
    NaN in either input gives NaN.
    """
    if not (math.isfinite(early) and math.isfinite(late)):
        return math.nan
    if late <= 0.0:
        return math.inf if early > 0.0 else math.nan
    return early / late


@dataclass(frozen=True)
class PrecedenceResult:
    """The paper's g23-precedence statistic for one run (all g23 values in Gram-eigenvalue units).

    g23_early: max g23 over windows ending before the grok step; NaN when there is none.
    g23_grok: g23 of the last window ending at or before the grok step; NaN when none.
    decline: g23_early / g23_grok (see :func:`decline_ratio`; inf when g23_grok ≤ 0 < early).
    preceded: grokked and decline > ratio. False for runs that never grok.
    n_windows_before: number of finite-g23 windows entering g23_early.
    monotone: ≤ 1 increase of g23 between the early window and the grok window (Dyck/SCAN
        script); None when undefined. n_increases: that count.
    early_step / grok_window_step: the steps of the two windows used.
    g23_peak, peak_step, g23_final, decline_peak_to_final: the control statistic (peak over the
        whole trajectory vs last finite value), reported for every run — the caveat of
        DESIGN.md 1.3 is that weight-decay-0 controls also decline by large factors.
    """

    grokked: bool
    g23_early: float
    g23_grok: float
    decline: float
    preceded: bool
    n_windows_before: int
    monotone: bool | None
    n_increases: int | None
    early_step: int | None
    grok_window_step: int | None
    g23_peak: float
    peak_step: int | None
    g23_final: float
    decline_peak_to_final: float



def g23_precedence(
    feature_steps: Sequence[int],
    g23: Sequence[float],
    grok_step: int | None,
    ratio: float = PRECEDENCE_RATIO,
    strict: bool = True,
) -> PrecedenceResult:
    """Did g23 = σ2² − σ3² compress between its pre-grok peak and the grok step? (paper criterion)

    feature_steps: (n,) step at which each window ends; g23: (n,) values, NaN where undefined
    (windows with < 3 rows, non-finite training). NaN windows are skipped everywhere: a NaN is
    "no measurement", not a value. grok_step: from :func:`grok_step`, None if the run never
    grokked. To use only full windows (the multitask script), filter rows before calling
    (e.g. ``window == W`` in the features table).

    g23_early is the max over the windows ending before the grok step (the code of both author
    scripts; the multitask script's docstring describes the first window instead, which no
    script computes).

    strict: True (default) counts a window as "before" only if it ends strictly before the grok
    step (DESIGN.md 1.3 wording, and the multitask script that covers 18 of the 24 runs);
    False uses "≤" (Dyck/SCAN script). The verdict ``preceded`` is the same either way: the only
    window the two choices disagree on is the one ending exactly at the grok step, which is then
    also the g23_grok window, and including it in the max can only raise g23_early to g23_grok,
    i.e. push the decline to 1 — never above ``ratio`` > 1. The reported ``decline`` can
    differ (< 1 vs exactly 1) in runs with no decline, and with strict=True a run whose only
    window ends at the grok step has no early value (n_windows_before = 0, not preceded).
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    s, g = _sorted_columns(feature_steps, g23)
    finite = np.isfinite(g)
    sf, gf = s[finite], g[finite]

    # Control statistic over the whole trajectory (every run; the only one for non-grokkers).
    if gf.size:
        ipk = int(np.argmax(gf))  # first occurrence of the maximum
        g23_peak, peak_step = float(gf[ipk]), int(sf[ipk])
        g23_final = float(gf[-1])
    else:
        g23_peak, peak_step, g23_final = math.nan, None, math.nan
    d_pf = decline_ratio(g23_peak, g23_final)

    nan = math.nan
    if grok_step is None:
        return PrecedenceResult(
            grokked=False, g23_early=nan, g23_grok=nan, decline=nan, preceded=False,
            n_windows_before=0, monotone=None, n_increases=None, early_step=None,
            grok_window_step=None, g23_peak=g23_peak, peak_step=peak_step, g23_final=g23_final,
            decline_peak_to_final=d_pf,
        )

    before = sf < grok_step if strict else sf <= grok_step
    at_or_before = sf <= grok_step
    n_before = int(before.sum())

    if at_or_before.any():
        i_grok = int(np.flatnonzero(at_or_before)[-1])
        g23_grok, grok_window_step = float(gf[i_grok]), int(sf[i_grok])
    else:
        g23_grok, grok_window_step = nan, None

    if n_before:
        idx_before = np.flatnonzero(before)
        i_early = int(idx_before[np.argmax(gf[idx_before])])
        g23_early, early_step = float(gf[i_early]), int(sf[i_early])
    else:
        g23_early, early_step, i_early = nan, None, None

    decline = decline_ratio(g23_early, g23_grok)
    preceded = bool(decline > ratio)  # NaN (undefined decline) compares False; inf counts

    if i_early is not None and grok_window_step is not None:
        # Dyck/SCAN script: windows with early_step <= s <= grok step, count strict increases.
        seg = gf[(sf >= early_step) & (sf <= grok_step)]
        n_inc = int(np.sum(np.diff(seg) > 0))
        monotone: bool | None = n_inc <= MONOTONE_TOLERANCE
    else:
        n_inc, monotone = None, None

    return PrecedenceResult(
        grokked=True, g23_early=g23_early, g23_grok=g23_grok, decline=decline, preceded=preceded,
        n_windows_before=n_before, monotone=monotone, n_increases=n_inc, early_step=early_step,
        grok_window_step=grok_window_step, g23_peak=g23_peak, peak_step=peak_step,
        g23_final=g23_final, decline_peak_to_final=d_pf,
    )
