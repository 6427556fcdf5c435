"""Events (grok step, precedence criterion) and the scoring of alarms, on constructed streams
whose answers are computed by hand in the comments."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgesweep.analysis.evaluation import classify_run, compare_arms, evaluate_detector
from edgesweep.analysis.events import (decline_ratio, g23_precedence, grok_step, memorization_step,
                                       phase_of)

nan = float("nan")

# ================================================================ grok / memorisation step


def test_grok_step_first_crossing_in_step_order():
    # rows out of order; sorted: 100: .5, 200: .94, 300: .96, 400: .99  → 300
    assert grok_step([300, 100, 200, 400], [0.96, 0.5, 0.94, 0.99]) == 300


def test_grok_step_threshold_is_inclusive_and_nan_never_counts():
    assert grok_step([100, 200, 300], [nan, 0.95, 0.99]) == 200
    assert grok_step([100, 200], [0.949999, nan]) is None
    assert grok_step([], []) is None
    # first crossing, not sustained: a later dip does not move it
    assert grok_step([100, 200, 300], [0.96, 0.5, 0.97]) == 100


def test_memorization_step_uses_099():
    assert memorization_step([100, 200, 300], [0.98, 0.99, 1.0]) == 200
    assert memorization_step([100, 200, 300], [0.98, 0.98, 0.985]) is None


def test_grok_step_rejects_mismatched_columns():
    with pytest.raises(ValueError):
        grok_step([100, 200], [0.5])


# ================================================================ precedence criterion

STEPS = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
G23 = [nan, 2.0, 8.0, 10.0, 6.0, 4.0, 2.0, 1.0, 0.5, 0.4]


def test_precedence_hand_computed():
    r = g23_precedence(STEPS, G23, grok_step=800)
    # windows ending before 800 with finite g23: 200..700 → max 10 at step 400
    assert r.grokked and r.n_windows_before == 6
    assert (r.g23_early, r.early_step) == (10.0, 400)
    # last window ending at or before 800 is step 800 itself: g23 = 1
    assert (r.g23_grok, r.grok_window_step) == (1.0, 800)
    assert r.decline == 10.0 and r.preceded
    # 10, 6, 4, 2, 1 between the early window and the grok window: no increase
    assert r.monotone is True and r.n_increases == 0
    # control statistic over the whole run: peak 10, final 0.4
    assert r.g23_peak == 10.0 and r.peak_step == 400 and r.g23_final == 0.4
    assert r.decline_peak_to_final == pytest.approx(25.0)


def test_precedence_grok_between_windows_uses_last_window_before():
    r = g23_precedence(STEPS, G23, grok_step=750)
    assert r.grok_window_step == 700 and r.g23_grok == 2.0
    assert r.decline == 5.0 and r.preceded


def test_precedence_rising_g23_strict_vs_non_strict():
    steps, g = [100, 200, 300, 400], [1.0, 2.0, 3.0, 4.0]
    s = g23_precedence(steps, g, 400, strict=True)
    # before 400: max(1, 2, 3) = 3; at 400: 4 → 0.75
    assert s.decline == pytest.approx(0.75) and not s.preceded
    ns = g23_precedence(steps, g, 400, strict=False)
    # "≤" includes the grok window itself: early = 4 → 1.0
    assert ns.decline == 1.0 and not ns.preceded


def test_precedence_ratio_is_strictly_greater():
    # early 3, grok 2 → exactly 1.5: not "> 1.5"
    r = g23_precedence([100, 200, 300], [1.0, 3.0, 2.0], 300)
    assert r.decline == 1.5 and not r.preceded
    assert g23_precedence([100, 200, 300], [1.0, 3.0, 2.0], 300, ratio=1.4).preceded


def test_precedence_gap_closed_at_grok_is_infinite_decline():
    r = g23_precedence([100, 200, 300], [1.0, 3.0, 0.0], 300)
    assert r.decline == math.inf and r.preceded
    r = g23_precedence([100, 200, 300], [0.0, 0.0, 0.0], 300)
    assert math.isnan(r.decline) and not r.preceded


def test_decline_ratio_edge_cases():
    assert decline_ratio(4.0, 2.0) == 2.0
    assert decline_ratio(1.0, -1e-15) == math.inf
    assert math.isnan(decline_ratio(0.0, 0.0))
    assert math.isnan(decline_ratio(nan, 1.0))


def test_precedence_no_grok_reports_the_caveat_number_only():
    # a laptop-style control: g23 falls 31x from its peak but the run never groks
    r = g23_precedence([100, 200, 300, 400, 500], [1.0, 31.0, 10.0, 3.0, 1.0], None)
    assert not r.grokked and not r.preceded
    assert math.isnan(r.decline) and math.isnan(r.g23_early) and r.n_windows_before == 0
    assert r.decline_peak_to_final == 31.0 and r.peak_step == 200


def test_precedence_no_window_before_grok():
    r = g23_precedence([500, 600], [5.0, 1.0], 300)
    assert r.grokked and r.n_windows_before == 0 and not r.preceded
    assert math.isnan(r.g23_early) and math.isnan(r.g23_grok) and r.grok_window_step is None
    # only the window at the grok step itself: strict has no "before" window
    r = g23_precedence([500], [5.0], 500)
    assert r.n_windows_before == 0 and r.g23_grok == 5.0 and not r.preceded


def test_precedence_nan_windows_are_skipped_not_values():
    # NaN at the grok step: the last *finite* window at or before it is used
    r = g23_precedence([100, 200, 300, 400], [nan, 9.0, 3.0, nan], 400)
    assert r.g23_early == 9.0 and r.g23_grok == 3.0 and r.grok_window_step == 300
    assert r.decline == 3.0 and r.preceded and r.n_windows_before == 2


def test_precedence_monotone_allows_one_increase():
    steps = [100, 200, 300, 400, 500, 600]
    one = g23_precedence(steps, [10.0, 5.0, 6.0, 3.0, 2.0, 1.0], 600)
    assert one.n_increases == 1 and one.monotone is True
    two = g23_precedence(steps, [10.0, 5.0, 6.0, 3.0, 4.0, 1.0], 600)
    assert two.n_increases == 2 and two.monotone is False
    assert two.preceded  # monotonicity is reported, it does not change the verdict


def _author_script_decline(steps, g23, gs):
    """Transcription of the Dyck/SCAN script's loop (≤ grok; first max; last ≤ grok)."""
    traj = sorted(zip(steps, g23), key=lambda t: t[0])
    pre = [(s, v) for s, v in traj if s <= gs]
    best = pre[0]
    for s, v in pre:
        if v > best[1]:
            best = (s, v)
    last = pre[-1][1]
    return best[1] / last, best[0]


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=25),
    grok_index=st.integers(0, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_precedence_matches_author_loop_and_is_order_free(values, grok_index, seed):
    n = len(values)
    steps = [100 * (i + 1) for i in range(n)]
    gs = steps[min(grok_index, n - 1)]
    ref_decline, ref_early_step = _author_script_decline(steps, values, gs)
    perm = np.random.default_rng(seed).permutation(n)
    r = g23_precedence(np.array(steps)[perm], np.array(values)[perm], gs, strict=False)
    assert r.decline == pytest.approx(ref_decline, rel=1e-12)
    assert r.early_step == ref_early_step
    assert r.preceded == (ref_decline > 1.5)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(0.0, 50.0), st.just(nan)), min_size=1, max_size=20),
    grok=st.integers(0, 2200),
)
def test_strict_and_non_strict_give_the_same_verdict(values, grok):
    steps = [100 * (i + 1) for i in range(len(values))]
    a = g23_precedence(steps, values, grok, strict=True)
    b = g23_precedence(steps, values, grok, strict=False)
    assert a.preceded == b.preceded


# ================================================================ scoring alarms


def test_classify_and_evaluate_hand_counts():
    runs = [
        (1100, 1500),  # hit, lead 400
        (1500, 1500),  # late, lead 0: an alarm at the grok's logged step warns of nothing
        (1600, 1500),  # late, lead -100
        (None, 1500),  # miss
        (800, None),  # false alarm
        (None, None),  # quiet
        (200, 1000),  # hit, lead 800
    ]
    ev = evaluate_detector(runs)
    assert (ev.n_runs, ev.n_grokked, ev.n_not_grokked) == (7, 5, 2)
    assert (ev.hits, ev.late, ev.misses) == (2, 2, 1)
    assert (ev.false_alarms, ev.quiet) == (1, 1)
    assert (ev.hit_rate.k, ev.hit_rate.n) == (2, 5)
    assert (ev.false_alarm_rate.k, ev.false_alarm_rate.n) == (1, 2)
    # leads of the hits only: 400, 800 → median 600
    assert (ev.lead.n, ev.lead.median, ev.lead.min, ev.lead.max) == (2, 600.0, 400.0, 800.0)
    assert classify_run(1600, 1500).lead == -100 and classify_run(1600, 1500).outcome == "late"
    assert (classify_run(1500, 1500).outcome, classify_run(1500, 1500).lead) == ("late", 0)
    assert (classify_run(1450, 1500).outcome, classify_run(1450, 1500).lead) == ("hit", 50)
    assert ev.as_dict()["outcomes"][4]["outcome"] == "false_alarm"


def test_evaluate_detector_all_hits_interval():
    ev = evaluate_detector([(100, 200)] * 24 + [(None, None)] * 24)
    assert ev.hit_rate.k == 24 and ev.hit_rate.n == 24
    assert ev.hit_rate.lo == pytest.approx(0.025 ** (1 / 24))
    assert ev.false_alarm_rate.k == 0 and ev.false_alarm_rate.hi == pytest.approx(1 - 0.025 ** (1 / 24))


def test_compare_arms_counts_any_alarm():
    wd = evaluate_detector([(100, 200)] * 3 + [(300, 200)])  # 3 hits + 1 late: 4/4 alarmed
    ctrl = evaluate_detector([(None, None)] * 3 + [(500, None)])  # 1/4 false alarm
    odds, p = compare_arms(wd, ctrl)
    # alarmed 4/4 vs 1/4: [[4, 0], [1, 3]]: column total 5 of 8; P(a=4) = C(4,4)C(4,1)/C(8,5) =
    # 4/56, P(a=1) the same by symmetry, P(a=2) = P(a=3) = 24/56 → two-sided p = 8/56
    assert p == pytest.approx(8 / 56)
    assert odds == math.inf


def test_phase_of_by_hand():
    steps = np.array([100, 500, 900, 1000, 2999, 3000, 4000])
    assert phase_of(steps, 900, 3000).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert phase_of(steps, None, None).tolist() == [0] * 7
    assert phase_of(steps, None, 1000).tolist() == [0, 0, 0, 2, 2, 2, 2]  # grok without memorising


# ================================================================ delayed generalisation


def _curve(fit, grok, n=60, every=50, at_fit=0.05, diverge_at=None):
    """Eval rows: train accuracy 0.5 → 0.95 at ``fit``; test accuracy ``at_fit`` from the fit
    step on, 0.97 from ``grok``; stops at ``diverge_at`` (a diverged run has no later evals)."""
    steps, train, test = [], [], []
    for i in range(n):
        s = i * every
        if diverge_at is not None and s > diverge_at:
            break
        steps.append(s)
        train.append(0.95 if fit is not None and s >= fit else 0.5)
        test.append(0.97 if grok is not None and s >= grok else (at_fit if fit is not None and s >= fit else 0.02))
    return steps, train, test


def test_classify_delayed_immediate_censored_diverged_by_hand():
    from edgesweep.analysis.events import classify_generalisation as cg

    g = cg(*_curve(fit=300, grok=1500))  # fit at 300 near chance, crosses 1,200 steps later
    assert (g.outcome, g.fit_step, g.grok_step, g.delay) == ("grokked", 300, 1500, 1200)
    assert cg(*_curve(fit=300, grok=750)).outcome == "immediate"  # 450 < 500 steps
    assert cg(*_curve(fit=300, grok=800)).outcome == "grokked"    # exactly 500: delayed
    # crosses late, but test accuracy was already 0.5 when the training set was fitted: gradual
    gradual = cg(*_curve(fit=300, grok=2000, at_fit=0.5))
    assert gradual.outcome == "immediate" and gradual.test_acc_at_fit == 0.5
    assert cg(*_curve(fit=None, grok=1000)).outcome == "immediate"  # generalised without fitting
    assert cg(*_curve(fit=300, grok=None)).outcome == "censored"
    steps, train, test = _curve(fit=300, grok=None, diverge_at=900)
    assert cg(steps, train, test, diverged=True).outcome == "diverged"
    # a run that grokked before it diverged grokked
    steps, train, test = _curve(fit=300, grok=1000, diverge_at=1400)
    assert cg(steps, train, test, diverged=True).outcome == "grokked"
    # the threshold is the grok criterion's: at 0.99 the 0.97 plateau never crosses
    assert cg(*_curve(fit=300, grok=1500), threshold=0.99).outcome == "censored"
    # the fit step's evaluation lacks a test accuracy: the last one measured before it counts
    # (a NaN there made the run "immediate", leaving a delayed generalisation out of the positives)
    assert cg([0, 500, 1000, 1500], [.1, .95, 1, 1], [0.05, math.nan, .1, .99]).outcome == "grokked"
    assert cg([0, 500, 1000, 1500], [.1, .95, 1, 1], [0.5, math.nan, .1, .99]).test_acc_at_fit == 0.5
    nothing_known = cg([0, 500, 1000, 1500], [.95, .95, 1, 1], [math.nan, math.nan, .1, .99])
    assert nothing_known.outcome == "immediate" and math.isnan(nothing_known.test_acc_at_fit)
