"""Events (grok step, precedence criterion) and the causal detector, on constructed streams
whose answers are computed by hand in the comments."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgesweep.spectral.detector import (
    DetectorConfig,
    G23CollapseDetector,
    classify_run,
    compare_arms,
    evaluate_detector,
    first_alarm,
)
from edgesweep.spectral.events import decline_ratio, g23_precedence, grok_step, memorization_step

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


def test_precedence_early_first_variant():
    r = g23_precedence(STEPS, G23, 800, early="first")
    # earliest finite window is step 200 with g23 = 2 → 2 / 1 = 2
    assert r.g23_early == 2.0 and r.early_step == 200 and r.decline == 2.0
    with pytest.raises(ValueError):
        g23_precedence(STEPS, G23, 800, early="median")


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


# ================================================================ detector

# Hand-built stream, steps 100..2500 (index i ↔ step 100·(i+1)).
G_STREAM = [1, 2, 4, 8, 10, 10, 9, 8, 6, 5, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
STEPS_STREAM = [100 * (i + 1) for i in range(len(G_STREAM))]


def test_detector_alarm_hand_computed():
    # defaults: factor 1.5, persistence 3, warm-up 5, R window 5, rel std ≤ 0.25.
    # Peak 10 (index 4). g ≤ 10/1.5 = 6.67 first at index 8 (g = 6, step 900), again at 9 and
    # 10; R constant → stable. Warm-up ended after index 4. Third consecutive: index 10.
    R = [2.0] * len(G_STREAM)
    assert first_alarm(STEPS_STREAM, G_STREAM, R) == 1100
    det = G23CollapseDetector()
    fired = [det.update(s, g, r) for s, g, r in zip(STEPS_STREAM, G_STREAM, R)]
    assert fired.count(True) == 1 and fired.index(True) == 10 and det.alarm_step == 1100
    # lead time against a grok at step 1500: 400 steps
    ev = evaluate_detector([(det.alarm_step, 1500)])
    assert ev.hits == 1 and ev.lead.median == 400


def test_detector_unstable_gap_ratio_delays_alarm():
    # R jumps to 4 at index 9 (step 1000): every 5-window containing it, i.e. windows ending
    # at indices 9..13, has values {4, 2, 2, 2, 2}: mean 2.4, std 0.8, rel std 1/3 > 0.25.
    # The streak 8 (stable) breaks at 9; conditions hold again from 14 → alarm at 16 (step 1700).
    R = [2.0] * len(G_STREAM)
    R[9] = 4.0
    assert first_alarm(STEPS_STREAM, G_STREAM, R) == 1700
    # with the stability condition switched off the jump is ignored
    assert first_alarm(STEPS_STREAM, G_STREAM, R, DetectorConfig(max_rel_std=math.inf)) == 1100


def test_detector_warmup_suppresses_early_decline():
    # peak at index 0, decline from index 1 on; with warm-up 5 the first allowed window is
    # index 5 → alarm at index 7 (persistence 3) = step 800.
    g = [10, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    steps = [100 * (i + 1) for i in range(10)]
    R = [3.0] * 10
    assert first_alarm(steps, g, R) == 800
    # without warm-up the 5-window R history is the binding constraint: stable from index 4,
    # so indices 4, 5, 6 → step 700; with a 1-window history, indices 1..3 → step 400
    assert first_alarm(steps, g, R, DetectorConfig(warmup_windows=0)) == 700
    assert first_alarm(steps, g, R, DetectorConfig(warmup_windows=0, stability_windows=1)) == 400
    assert first_alarm(steps, g, R, DetectorConfig(warmup_windows=8)) is None  # only 9 and 10


def test_detector_nan_g23_breaks_the_streak_and_does_not_count_for_warmup():
    g = [nan, nan, 10, 9, 8, 7, 6, 5, 1, nan, 1, 1, 1]
    steps = [100 * (i + 1) for i in range(len(g))]
    R = [2.0] * len(g)
    # finite windows start at index 2; warm-up covers indices 2..6 (5 finite windows).
    # decline (≤ 6.67): index 7 (5), 8 (1); index 9 NaN breaks; 10, 11, 12 → alarm at 12.
    assert first_alarm(steps, g, R) == 1300


def test_detector_decline_boundary_is_inclusive():
    # peak 3, then g = 2 = 3 / 1.5 exactly: "fallen by a factor 1.5" includes equality
    cfg = DetectorConfig(warmup_windows=0, persistence=1, stability_windows=1)
    assert first_alarm([100, 200], [3.0, 2.0], [2.0, 2.0], cfg) == 200
    det = G23CollapseDetector(cfg)
    assert [det.update(100, 3.0, 2.0), det.update(200, 2.0, 2.0)] == [False, True]
    assert first_alarm([100, 200], [3.0, 2.0000001], [2.0, 2.0], cfg) is None


def test_detector_never_alarms_without_decline_or_positive_peak():
    steps = list(range(100, 2100, 100))
    assert first_alarm(steps, [5.0] * 20, [2.0] * 20) is None  # flat g23
    assert first_alarm(steps, list(range(1, 21)), [2.0] * 20) is None  # rising g23
    assert first_alarm(steps, [0.0] * 20, [2.0] * 20) is None  # zero peak
    assert first_alarm([], [], []) is None


def test_detector_ignores_replayed_steps_and_latches():
    det = G23CollapseDetector(DetectorConfig(warmup_windows=0, persistence=1, stability_windows=1))
    assert det.update(100, 10.0, 2.0) is False
    assert det.update(100, 1.0, 2.0) is False  # replay of step 100: ignored
    assert det.update(50, 1.0, 2.0) is False  # older step: ignored
    assert det.update(200, 1.0, 2.0) is True
    assert det.update(300, 0.1, 2.0) is False  # fires once
    assert det.alarm_step == 200


def test_detector_state_dict_round_trip_mid_stream():
    R = [2.0] * len(G_STREAM)
    full = G23CollapseDetector()
    out_full = [full.update(s, g, r) for s, g, r in zip(STEPS_STREAM, G_STREAM, R)]
    a = G23CollapseDetector()
    out = [a.update(s, g, r) for s, g, r in zip(STEPS_STREAM[:9], G_STREAM[:9], R[:9])]
    import json

    state = json.loads(json.dumps(a.state_dict()))  # must survive a JSON checkpoint
    b = G23CollapseDetector()
    b.load_state_dict(state)
    out += [b.update(s, g, r) for s, g, r in zip(STEPS_STREAM[9:], G_STREAM[9:], R[9:])]
    assert out == out_full and b.alarm_step == full.alarm_step == 1100
    with pytest.raises(ValueError):
        G23CollapseDetector(DetectorConfig(decline_factor=2.0)).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs",
    [dict(decline_factor=1.0), dict(decline_factor=float("inf")), dict(persistence=0),
     dict(warmup_windows=-1), dict(stability_windows=0), dict(max_rel_std=-0.1), dict(max_rel_std=nan)],
)
def test_detector_config_validation(kwargs):
    with pytest.raises(ValueError):
        DetectorConfig(**kwargs)


# sampled values make exact ties g = peak / factor frequent (6/3, 3/1.5, 6/2, 8/2 ...)
_g23_values = st.one_of(st.floats(0.0, 20.0), st.just(nan), st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0]))
_r_values = st.one_of(st.floats(1.0, 3.0), st.just(nan), st.just(math.inf), st.sampled_from([2.0, 2.5]))
_configs = st.builds(
    DetectorConfig,
    decline_factor=st.sampled_from([1.2, 1.5, 2.0, 3.0]),
    persistence=st.integers(1, 4),
    warmup_windows=st.integers(0, 6),
    stability_windows=st.integers(1, 6),
    max_rel_std=st.sampled_from([0.05, 0.25, math.inf]),
)


@st.composite
def _streams(draw):
    n = draw(st.integers(0, 40))
    g = draw(st.lists(_g23_values, min_size=n, max_size=n))
    r = draw(st.lists(_r_values, min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    steps = list(np.cumsum(gaps).astype(int))
    return steps, g, r


@settings(max_examples=300, deadline=None)
@given(stream=_streams(), cfg=_configs)
def test_first_alarm_equals_running_the_class(stream, cfg):
    steps, g, r = stream
    det = G23CollapseDetector(cfg)
    fired_at = [s for s, gi, ri in zip(steps, g, r) if det.update(s, gi, ri)]
    assert len(fired_at) <= 1
    expected = fired_at[0] if fired_at else None
    assert det.alarm_step == expected
    assert first_alarm(steps, g, r, cfg) == expected


@settings(max_examples=200, deadline=None)
@given(stream=_streams(), cfg=_configs, cut=st.integers(0, 40), future=_streams())
def test_detector_is_causal_appending_future_never_changes_an_earlier_alarm(stream, cfg, cut, future):
    steps, g, r = stream
    cut = min(cut, len(steps))
    prefix = (steps[:cut], g[:cut], r[:cut])
    a_prefix = first_alarm(*prefix, cfg)
    # arbitrary (adversarial) future data appended after the prefix
    last = prefix[0][-1] if cut else 0
    f_steps = [last + s for s in future[0]]
    a_full = first_alarm(prefix[0] + f_steps, prefix[1] + future[1], prefix[2] + future[2], cfg)
    if a_prefix is not None:
        assert a_full == a_prefix
    else:
        assert a_full is None or a_full > last


def test_classify_and_evaluate_hand_counts():
    runs = [
        (1100, 1500),  # hit, lead 400
        (1500, 1500),  # hit, lead 0 (same logged step)
        (1600, 1500),  # late
        (None, 1500),  # miss
        (800, None),  # false alarm
        (None, None),  # quiet
        {"alarm_step": 200, "grok_step": 1000},  # hit, lead 800
    ]
    ev = evaluate_detector(runs)
    assert (ev.n_runs, ev.n_grokked, ev.n_not_grokked) == (7, 5, 2)
    assert (ev.hits, ev.hits_with_lead, ev.late, ev.misses) == (3, 2, 1, 1)
    assert (ev.false_alarms, ev.quiet) == (1, 1)
    assert (ev.hit_rate.k, ev.hit_rate.n) == (3, 5)
    assert (ev.false_alarm_rate.k, ev.false_alarm_rate.n) == (1, 2)
    # leads of hits: 400, 0, 800 → median 400, min 0, max 800
    assert (ev.lead.n, ev.lead.median, ev.lead.min, ev.lead.max) == (3, 400.0, 0.0, 800.0)
    assert classify_run(1600, 1500).lead == -100 and classify_run(1600, 1500).outcome == "late"
    assert ev.as_dict()["outcomes"][4]["outcome"] == "false_alarm"


def test_evaluate_detector_all_hits_interval():
    ev = evaluate_detector([(100, 200)] * 24 + [(None, None)] * 24)
    assert ev.hit_rate.k == 24 and ev.hit_rate.n == 24
    assert ev.hit_rate.lo == pytest.approx(0.025 ** (1 / 24))
    assert ev.false_alarm_rate.k == 0 and ev.false_alarm_rate.hi == pytest.approx(1 - 0.025 ** (1 / 24))


def test_compare_arms_counts_any_alarm():
    wd = evaluate_detector([(100, 200)] * 3 + [(300, 200)])  # 3 hits + 1 late: 4/4 alarmed
    ctrl = evaluate_detector([(None, None)] * 3 + [(500, None)])  # 1/4 false alarm
    c = compare_arms(wd, ctrl)
    assert (c["a_alarmed"], c["a_n"], c["b_alarmed"], c["b_n"]) == (4, 4, 1, 4)
    # [[4, 0], [1, 3]]: column total 5 of 8; P(a=4) = C(4,4)C(4,1)/C(8,5) = 4/56, P(a=1) the
    # same by symmetry, P(a=2) = P(a=3) = 24/56 → two-sided p = 8/56
    assert c["fisher_p"] == pytest.approx(8 / 56)
    assert c["fisher_odds_ratio"] == math.inf
