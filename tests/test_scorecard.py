"""Scorecard verdicts on synthetic runs built so that each verdict is known in advance."""

import math

import numpy as np
import pytest

import json

import polars as pl

from edgesweep.analysis.record import AnalysisConfig, TrialRecord, TrialSettings
from edgesweep.analysis.runs import run_row, runs_table, summary_table
from edgesweep.analysis.scorecard import (
    FAIL,
    NOT_TESTABLE,
    PASS,
    check_adiabatic_regimes,
    bbp_ceiling,
    check_bbp_vacuous,
    check_gap_flow_damping,
    check_gap_loss_correlation,
    check_k_star_optimizer,
    check_precedence,
    check_stability_ordering,
    check_three_phase,
    gap_flow_points,
    scorecard,
    three_phase_pattern,
)

TRAPEZOID = np.concatenate([np.linspace(1.5, 5, 12), np.full(12, 5.0), np.linspace(5, 1.5, 12)])
TRIANGLE = np.concatenate([np.linspace(1.5, 5, 13), np.linspace(5, 1.5, 13)[1:]])
RISING = np.linspace(1.0, 5.0, 30)

# ------------------------------------------------------------------ (a) k* vs optimizer


def test_k_star_optimizer_pass_fail_not_testable():
    one, two = np.ones(20), np.full(20, 2.0)
    res = check_k_star_optimizer(["muon", "AdamW"], ["lm", "lm"], [one, two], [3.00, 3.10], min_runs=1)
    assert res.verdict == PASS, res.reason
    assert res.measured["workloads"]["lm"]["muon_k_star"] == 1
    res = check_k_star_optimizer(["muon", "adamw"], ["lm", "lm"], [two, two], [3.0, 3.1], min_runs=1)
    assert res.verdict == FAIL
    # only one optimizer
    res = check_k_star_optimizer(["adamw", "adamw"], ["lm", "lm"], [two, two], [3.0, 3.1], min_runs=1)
    assert res.verdict == NOT_TESTABLE
    # both optimizers but validation losses 33 % apart: the premise "comparable loss" fails
    res = check_k_star_optimizer(["muon", "adamw"], ["lm", "lm"], [one, two], [3.0, 4.0], min_runs=1)
    assert res.verdict == NOT_TESTABLE and not res.measured["workloads"]["lm"]["comparable_loss"]


def test_k_star_testability_needs_three_runs_per_optimizer_and_reports_fixed_ratios():
    one, two = np.ones(20), np.full(20, 2.0)
    fr = {"sigma12": np.full(20, 3.0), "sigma23": np.full(20, 1.5), "sigma34": np.full(20, 1.2)}
    two_each = check_k_star_optimizer(["muon", "muon", "adamw", "adamw"], ["lm"] * 4, [one, one, two, two],
                                      [3.0] * 4, [fr] * 4)
    assert two_each.verdict == NOT_TESTABLE and two_each.testability["met"] is False
    assert "measured 0" in two_each.reason and ">= 3 Muon" in two_each.reason
    three = check_k_star_optimizer(["muon"] * 3 + ["adamw"] * 3, ["lm"] * 6, [one] * 3 + [two] * 3, [3.0] * 6, [fr] * 6)
    assert three.verdict == PASS and three.testability["met"]
    e = three.measured["workloads"]["lm"]
    assert e["muon_runs_k1"][:2] == [3, 3] and e["adamw_runs_k2"][:2] == [3, 3]
    assert (e["muon_sigma12"], e["adamw_sigma23"], e["adamw_sigma34"]) == (3.0, 1.5, 1.2)


def test_k_star_uses_modal_value_per_run():
    mostly_one = np.array([1, 1, 1, 2, 3])
    mostly_two = np.array([2, 2, 1, 2])
    res = check_k_star_optimizer(["muon", "adamw"], ["lm", "lm"], [mostly_one, mostly_two], [2.0, 2.0], min_runs=1)
    assert res.verdict == PASS


# ------------------------------------------------------------------ (b) BBP


def test_bbp_pass_and_fail_with_hand_medians():
    res = check_bbp_vacuous([[25, 30, 35], [40, 50, 60, np.nan]])
    # run medians 30 and 50 → median 40 ≥ 20
    assert res.verdict == PASS and res.measured["median_of_run_medians"] == 40.0
    assert res.measured["min"] == 25.0
    res = check_bbp_vacuous([[4, 5, 6], [10, 11, 12]])
    # run medians 5 and 11 → 8 < 20, even though every window is above 1
    assert res.verdict == FAIL and res.measured["median_of_run_medians"] == 8.0
    assert res.measured["fraction_windows_above_1"] == 1.0
    assert check_bbp_vacuous([[np.nan]]).verdict == NOT_TESTABLE
    # +inf (d_crit = 0 below a positive σ_W) is kept as the extreme value, NaN dropped:
    # values (10, 30, inf) → median 30
    assert check_bbp_vacuous([[np.inf, 10.0, 30.0, np.nan]]).measured["median_of_run_medians"] == 30.0


def test_bbp_ceiling_is_exact_and_decides_testability():
    # a window with σ = (4, 3, 2, 1) at P = 10⁶, W = 4: ν² = mean(λ_3, λ_4)/P = 2.5/P, so
    # d_crit = √2.5·(W−1)^¼·P^−¼ and the ratio = 1/d_crit; its ceiling (P/(W−1))^¼ = 24.03.
    P, sig = 1e6, np.array([4.0, 3.0, 2.0, 1.0])
    ratio = sig[-1] / (math.sqrt(np.mean(sig[2:] ** 2) / P) * (P * 3) ** 0.25)
    assert bbp_ceiling(sig, ratio) == pytest.approx((P / 3) ** 0.25)
    # P = 32,768 attention parameters at W = 10: ceiling 7.77 < 40 → NOT-TESTABLE with the number
    small = check_bbp_vacuous([[6.0, 7.0]], [[(32768 / 9) ** 0.25] * 2])
    assert small.verdict == NOT_TESTABLE and "measured 7.768, needs >= 40" in small.reason and small.testability["required"] == 40.0
    # P = 10⁸ at W = 10: ceiling 57.7 ≥ 40 → tested (here FAIL: ratios 6–7 ≪ 20)
    big = check_bbp_vacuous([[6.0, 7.0]], [[(1e8 / 9) ** 0.25] * 2])
    assert big.verdict == FAIL and big.testability["met"]


# ------------------------------------------------------------------ (c) stability ordering


def test_stability_ordering_pass_fail_not_testable():
    # k* = 2: dominant = α1 = 0.9, gap = mean(α2, α3) = 0.35, sub = mean(α4, α5) = 0.025
    good = [np.array([0.9, 0.4, 0.3, 0.05, 0.0])] * 4
    res = check_stability_ordering([good], [np.full(4, 2)])
    assert res.verdict == PASS
    assert res.measured["alpha_dominant"] == pytest.approx(0.9)
    assert res.measured["alpha_gap"] == pytest.approx(0.35)
    assert res.measured["alpha_sub"] == pytest.approx(0.025)
    # dominant 0.2 < gap 0.5
    bad = [np.array([0.2, 0.5, 0.5, 0.1, 0.1])] * 4
    assert check_stability_ordering([bad], [np.full(4, 2)]).verdict == FAIL
    # k* = 1 everywhere: no dominant modes → not testable, but gap vs sub is reported
    res = check_stability_ordering([good], [np.ones(4)])
    assert res.verdict == NOT_TESTABLE
    assert res.measured["alpha_gap_all_windows"] == pytest.approx(0.65)  # mean(0.9, 0.4)


def test_stability_runs_weigh_equally():
    # run A: 1 window with (1.0, 0.5, 0.5, 0.0); run B: 3 windows with (0.4, 0.6, 0.6, 0.2)
    a = [np.array([1.0, 0.5, 0.5, 0.0])]
    b = [np.array([0.4, 0.6, 0.6, 0.2])] * 3
    res = check_stability_ordering([a, b], [np.full(1, 2), np.full(3, 2)])
    # run-mean average: dominant (1.0 + 0.4)/2 = 0.7, gap (0.5 + 0.6)/2 = 0.55, sub 0.1
    assert res.measured["alpha_dominant"] == pytest.approx(0.7)
    assert res.measured["alpha_gap"] == pytest.approx(0.55)
    assert res.verdict == PASS


# ------------------------------------------------------------------ (d) three phases


def test_three_phase_shapes():
    assert three_phase_pattern(TRAPEZOID).present
    assert three_phase_pattern(TRAPEZOID + 0.1 * np.sin(2.1 * np.arange(36))).present
    assert not three_phase_pattern(TRIANGLE).present  # no plateau: top region < one window
    # a long triangle has a top region longer than one smoothing window (8 > 5 points) but far
    # shorter than its flanks (~33 points each): still rise + collapse without a plateau
    long_triangle = np.concatenate([np.linspace(1.5, 5, 40), np.linspace(5, 1.5, 40)[1:]])
    res = three_phase_pattern(long_triangle)
    assert not res.present and res.collapse_start - res.rise_end > res.window
    assert not three_phase_pattern(RISING).present  # no collapse
    assert not three_phase_pattern(np.concatenate([np.linspace(1.5, 5, 12), np.full(20, 5.0)])).present
    spike = np.ones(30)
    spike[15] = 10.0
    assert not three_phase_pattern(spike).present
    assert not three_phase_pattern(np.full(30, 2.0)).present
    short = three_phase_pattern(TRAPEZOID[::4])  # 9 points ≤ 10: not evaluated
    assert not short.present and short.window == 0


def test_three_phase_verdicts():
    followed = [12, 12, 12]  # windows after the transition
    assert check_three_phase([TRAPEZOID, TRAPEZOID * 1.1, RISING], post_windows=followed).verdict == PASS  # 2/3
    res = check_three_phase([TRAPEZOID, RISING, TRIANGLE], post_windows=followed)  # 1/3
    assert res.verdict == FAIL and res.measured["n_present"] == 1
    assert check_three_phase([TRAPEZOID[:8]] * 3, post_windows=followed).verdict == FAIL  # too short


def test_three_phase_testability_needs_runs_followed_past_the_transition():
    # three runs stopped 3 windows after grokking: the collapse cannot be seen → NOT-TESTABLE
    cut = check_three_phase([TRAPEZOID] * 3, post_windows=[3, 3, 3])
    assert cut.verdict == NOT_TESTABLE and "measured 0" in cut.reason
    # runs without a grok event (language models) count as followed with ≥ 30 windows
    assert check_three_phase([TRAPEZOID] * 3, post_windows=[None] * 3).testability["met"]
    # the fixed-position ratio is judged; the k*-relative R is reported beside
    res = check_three_phase([RISING] * 3, fixed_ratio=[TRAPEZOID] * 3, post_windows=[12] * 3)
    assert res.verdict == PASS and res.measured["n_present_in_k_star_relative_R"] == 0


# ------------------------------------------------------------------ (e) R vs validation loss


def _orthogonal_to(n, *vecs, seed=0):
    """A unit vector orthogonal to the given vectors (Gram–Schmidt on a random start)."""
    v = np.random.default_rng(seed).normal(size=n)
    basis = []
    for u in vecs:
        u = np.asarray(u, float).copy()
        for b in basis:
            u -= (u @ b) * b
        basis.append(u / np.linalg.norm(u))
    for b in basis:
        v -= (v @ b) * b
    return v / np.linalg.norm(v)


def test_gap_loss_correlation_pass_and_fail():
    n = 50
    steps = 100 * np.arange(1, n + 1)
    t = np.arange(n, dtype=float)
    R = 2.0 + np.sin(t / 3.0)
    # loss = 3 − 0.5·sin + trend: detrending is linear, so detrended loss = −0.5·detrended R → r0 = −1
    loss = 3.0 - 0.5 * np.sin(t / 3.0) - 0.01 * t
    res = check_gap_loss_correlation([steps] * 3, [R] * 3, [steps] * 3, [loss] * 3)
    assert res.verdict == PASS
    assert res.measured["median_r0"] == pytest.approx(-1.0, abs=1e-12)
    # loss = trend + a pattern orthogonal to (1, t, R): the detrended zero-lag r is exactly 0
    ortho = _orthogonal_to(n, np.ones(n), t, R)
    loss0 = 5.0 - 0.01 * t + 0.3 * ortho
    res = check_gap_loss_correlation([steps], [R], [steps], [loss0])
    assert res.verdict == FAIL
    assert res.measured["median_abs_r0"] == pytest.approx(0.0, abs=1e-10)
    # too few windows
    assert check_gap_loss_correlation([steps[:5]], [R[:5]], [steps[:5]], [loss[:5]]).verdict == NOT_TESTABLE


def test_gap_loss_aligns_evals_by_step_not_by_row_order():
    n = 40
    steps = 100 * np.arange(1, n + 1)
    t = np.arange(n, dtype=float)
    R = 2.0 + np.sin(t / 3.0)
    loss_at_features = 3.0 + 0.5 * np.sin(t / 3.0)
    # evals at exactly the feature steps but listed in reverse order, plus an extra far eval
    res = check_gap_loss_correlation(
        [steps], [R], [np.append(steps[::-1], 10**6)], [np.append(loss_at_features[::-1], 99.0)]
    )
    assert res.measured["median_r0"] == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ (f) gap-flow damping


def _relaxing(tau, n=30, start=4.0):
    steps = 100.0 * np.arange(n)
    return steps, 1.0 + start * np.exp(-steps / tau)


def test_gap_flow_damping_pass_fail_not_testable():
    # exponential relaxation g = 1 + 4 e^{-t/τ}: the centred difference is exactly −c·(g − 1),
    # linear in g with a negative slope → r = −1 in every run; 6/6 negative, sign test p = 1/64
    runs = [_relaxing(tau) for tau in (500, 800, 1000, 1500, 2000, 3000)]
    res = check_gap_flow_damping([s for s, _ in runs], gap=[g for _, g in runs])
    assert res.verdict == PASS, res.reason
    assert res.measured["median_r"] == pytest.approx(-1.0, abs=1e-9)
    assert res.measured["sign_test_p"] == pytest.approx(1 / 64)
    # exponential growth: r = +1 in every run
    grow = [(s, np.exp(s / tau)) for s, tau in ((100.0 * np.arange(30), tau) for tau in (800, 1000, 1200, 1500, 2000, 2500))]
    res = check_gap_flow_damping([s for s, _ in grow], gap=[g for _, g in grow])
    assert res.verdict == FAIL and res.measured["median_r"] == pytest.approx(1.0, abs=1e-9)
    # 3 runs cannot reach p < 0.05 in a sign test (best p = 1/8)
    res = check_gap_flow_damping([s for s, _ in runs[:3]], gap=[g for _, g in runs[:3]])
    assert res.verdict == NOT_TESTABLE


def test_gap_flow_points_fixed_k_hand_values():
    steps = [0, 100, 200, 300]
    sigma = [np.array([5.0, 3.0, 1.0]), np.array([5.0, 2.0, 1.0]),
             np.array([4.0, 3.5, 1.0]), np.array([6.0, 2.0, 1.0])]
    k_star = [1, 1, 2, 1]
    g, d = gap_flow_points(steps, sigma=sigma, k_star=k_star)
    # i=1, k=1: g = 5−2 = 3; (g_next − g_prev)/200 with g at k=1: (0.5 − 2)/200
    # i=2, k=2: g = 3.5−1 = 2.5; neighbours at k=2 (σ2 − σ3 of rows 1 and 3): (1 − 1)/200
    np.testing.assert_allclose(g, [3.0, 2.5])
    np.testing.assert_allclose(d, [(0.5 - 2.0) / 200, (1.0 - 1.0) / 200])
    # the gap column instead differences whatever position each window had
    g2, d2 = gap_flow_points(steps, gap=[2.0, 3.0, 2.5, 4.0])
    np.testing.assert_allclose(g2, [3.0, 2.5])
    np.testing.assert_allclose(d2, [(2.5 - 2.0) / 200, (4.0 - 3.0) / 200])


# ------------------------------------------------------------------ (g) adiabatic regimes


def _adiabatic_run(plateau, transition, n=30, grok=2500, memo=500):
    steps = 100 * np.arange(1, n + 1)
    A = np.full(n, plateau)
    A[np.abs(steps - grok) <= 200] = transition  # ±2 windows around the grok step
    return steps, A, grok, memo


def test_adiabatic_regimes_pass_fail_not_testable():
    runs = [_adiabatic_run(0.1, 1.0) for _ in range(3)]
    res = check_adiabatic_regimes(*zip(*runs))
    # transition median 1.0 / plateau median 0.1 = 10
    assert res.verdict == PASS
    assert res.measured["median_ratio_transition_to_plateau"] == pytest.approx(10.0)
    assert res.measured["fraction_plateau_below_1"] == 1.0
    assert res.measured["runs"][0]["n_transition"] == 5
    # plateau = 500 + 200 < step < 2500 − 200 → steps 800..2200: 15 windows
    assert res.measured["runs"][0]["n_plateau"] == 15
    runs = [_adiabatic_run(1.0, 0.1) for _ in range(3)]
    assert check_adiabatic_regimes(*zip(*runs)).verdict == FAIL
    steps, A, _, memo = _adiabatic_run(0.1, 1.0)
    assert check_adiabatic_regimes([steps], [A], [None], [memo]).verdict == NOT_TESTABLE


def test_adiabatic_testability_needs_windows_narrower_than_the_transition():
    runs = [_adiabatic_run(0.1, 1.0) for _ in range(3)]
    wide = check_adiabatic_regimes(*zip(*runs), window_span=[1000.0] * 3, transition_width=[200.0] * 3)
    assert wide.verdict == NOT_TESTABLE and "measured 1000, needs <= 200" in wide.reason and wide.testability["required"] == 200.0
    narrow = check_adiabatic_regimes(*zip(*runs), window_span=[100.0] * 3, transition_width=[200.0] * 3)
    assert narrow.verdict == PASS and narrow.testability["met"]


# ------------------------------------------------------------------ (h) precedence


def summary_of(wd, grokked, preceded, dec=None):
    """The summary table of runs with these outcomes (the counts come from summary_table)."""
    n = len(wd)
    runs = pl.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "family": ["modular"] * n,
                         "weight_decay": [float(w) for w in wd], "running": [False] * n,
                         "grok_step": [100 if g else None for g in grokked], "preceded": preceded,
                         "alarm_step": [None] * n, "error": [None] * n,
                         "decline_peak_to_final": dec if dec is not None else [None] * n},
                        schema_overrides={"grok_step": pl.Int64, "alarm_step": pl.Int64, "error": pl.String,
                                          "decline_peak_to_final": pl.Float64})
    return summary_table(runs)


def test_precedence_24_of_24_vs_0_of_24():
    wd = [1.0] * 24 + [0.0] * 24
    grokked = [True] * 24 + [False] * 24
    preceded = [True] * 24 + [False] * 24
    dec = [20.0] * 24 + [31.0] * 24
    res = check_precedence(summary_of(wd, grokked, preceded, dec))
    assert res.verdict == PASS, res.reason
    m = res.measured
    assert m["weight_decay"]["preceded_ci"][0] == pytest.approx(0.025 ** (1 / 24))
    assert m["control"]["preceded_ci"][1] == pytest.approx(1 - 0.025 ** (1 / 24))
    assert m["fisher_p"] == pytest.approx(2 / math.comb(48, 24), rel=1e-9)
    assert m["control"]["decline_peak_to_final_median"] == 31.0  # the caveat, reported


def test_precedence_fail_cases_and_v2_count():
    wd = [1.0] * 24 + [0.0] * 24
    # one weight-decay run grokked without a preceding decline
    pre = [True] * 23 + [False] + [False] * 24
    assert check_precedence(summary_of(wd, [True] * 24 + [False] * 24, pre)).verdict == FAIL
    # v2 of the paper: 1/24 controls → still PASS; 2/24 → FAIL
    gk = [True] * 24 + [True, True] + [False] * 22
    one = [True] * 24 + [True, False] + [False] * 22
    two = [True] * 24 + [True, True] + [False] * 22
    assert check_precedence(summary_of(wd, gk, one)).verdict == PASS
    assert check_precedence(summary_of(wd, gk, two)).verdict == FAIL
    # no weight-decay arm / no grokking in it
    assert check_precedence(summary_of([0.0] * 3, [False] * 3, [False] * 3)).verdict == NOT_TESTABLE
    assert check_precedence(summary_of([1.0] * 3, [False] * 3, [False] * 3)).verdict == NOT_TESTABLE
    # a weight-decay run that did not grok is not a grokking event: 2/2 grokked preceded → PASS
    assert check_precedence(summary_of([1.0] * 3, [True, True, False], [True, True, False])).verdict == PASS
    # weight decays drawn at random pool into one arm
    mixed = summary_of([0.1, 0.3, 2.0, 0.0], [True, True, True, False], [True, True, True, False])
    assert check_precedence(mixed).measured["weight_decay"]["n"] == 3


# ------------------------------------------------------------------ records + scorecard()


def _run(trial_id, wd, grok, seed=0):
    """A grokking-like run (a TrialRecord with configured W = 4): g23 peaks then collapses 10x
    by the grok step (wd > 0), or a control whose g23 also collapses but whose accuracy never
    crosses 0.95."""
    n = 30
    steps = 100 * np.arange(1, n + 1)
    g23 = np.concatenate([np.linspace(1, 10, 8), np.linspace(10, 1, 14), np.full(8, 0.5)])
    windows = [min(i + 2, 4) for i in range(n)]  # the window fills: 2, 3, 4, 4, ... rows
    acc = np.where(steps >= 2300, 0.99, 0.3) if grok else np.full(n, 0.3)
    perm = np.random.default_rng(seed).permutation(n)  # rows arrive shuffled; the record sorts them
    feats = pl.DataFrame({
        "step": steps, "window": windows, "sigma": [[4.0, 2.0, 1.5, 1.0][:w] for w in windows],
        "k_star": np.ones(n, dtype=np.int32), "gap_ratio": TRAPEZOID[3:33], "gap": np.full(n, 2.0),
        "g23": g23, "alpha": [[0.9, 0.5, 0.2, 0.1][:w] for w in windows], "adiabatic": np.full(n, 0.1),
        "bbp_ratio": np.full(n, 60.0), "nonfinite": [False] * n})[perm]
    evals = pl.DataFrame({"step": steps, "test_loss": np.linspace(4, 1, n), "grok_acc": acc,
                          "memo_acc": np.where(steps >= 500, 1.0, 0.5)})
    trial = {"trial_id": trial_id, "workload": "mod_add", "family": "modular", "optimizer": "adamw",
             "weight_decay": wd, "seed": seed, "status": "completed", "steps": int(steps[-1]),
             "config": json.dumps({"monitor": {"window": 4}})}
    return TrialRecord(trial, TrialSettings.parse(trial["config"], AnalysisConfig()), feats, evals)


def test_record_normalises_rows_and_finds_full_windows():
    r = _run("t0", 1.0, grok=True, seed=3)
    assert np.all(np.diff(r.features["step"].to_numpy()) > 0)
    assert r.grok_step == 2300 and r.memorization_step == 500
    assert r.windows(full_only=True).height == 28 and r.windows(full_only=False).height == 30
    np.testing.assert_allclose(r.features["g23"].to_numpy()[:2], [1.0, 1 + 9 / 7])
    assert r.final_val_loss == 1.0


def test_scorecard_end_to_end_fixed_order_and_precedence():
    records = [_run(f"wd{i}", 1.0, True, i) for i in range(3)] + [_run(f"c{i}", 0.0, False, i) for i in range(3)]
    runs = runs_table([run_row(r, AnalysisConfig()) for r in records])
    preds = scorecard(records, runs, summary_table(runs))
    names = [p.name for p in preds]
    assert names == [
        "optimizer_dependent_k_star", "bbp_vacuous", "stability_ordering", "three_phase_gap_ratio",
        "gap_loss_correlation", "gap_flow_damping", "adiabatic_regimes", "grokking_precedence",
    ]
    by = {p.name: p for p in preds}
    assert by["optimizer_dependent_k_star"].verdict == NOT_TESTABLE  # AdamW only
    # 60 ≥ 20, and testable: the ceiling 60·rms(1.5, 1)/1 = 76.5 ≥ 40
    assert by["bbp_vacuous"].verdict == PASS and by["bbp_vacuous"].measured["median_ceiling"] == pytest.approx(76.5, rel=1e-3)
    assert by["stability_ordering"].verdict == NOT_TESTABLE  # k* = 1 everywhere
    # g23 peaks at 10 (steps 800 and 900); grok at 2300 where g23 = 0.5 → decline 20 > 1.5 for
    # every wd run; controls never grok, their peak-to-final decline is also 10 / 0.5 = 20
    prec = by["grokking_precedence"]
    assert prec.verdict == PASS
    assert prec.measured["weight_decay"]["preceded"] == 3 and prec.measured["control"]["grokked"] == 0
    assert prec.measured["control"]["decline_peak_to_final_median"] == pytest.approx(20.0)
    for p in preds:
        assert p.verdict in (PASS, FAIL, NOT_TESTABLE)
