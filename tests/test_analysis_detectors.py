"""The causal detectors: the g23-collapse rule on hand-built streams (answers by hand in the
comments), its state, causality, the filling-window rule, and online = offline replay."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgesweep.analysis.detectors import (DetectorConfig, G23CollapseDetector, make_detector,
                                          replay)
from edgesweep.analysis.evaluation import evaluate_detector

nan = float("nan")


def rows(steps, g, r, window=None):
    out = [{"step": s, "g23": gi, "gap_ratio": ri, "nonfinite": False} for s, gi, ri in zip(steps, g, r)]
    if window is not None:
        for row, w in zip(out, window):
            row["window"] = w
    return out


def first_alarm(steps, g, r, cfg=None):
    """The detector's alarm on a stream fed in step order (every window counts as full)."""
    order = np.argsort(np.asarray(steps, dtype=float), kind="stable")
    feats = [rows(steps, g, r)[i] for i in order]
    return replay(G23CollapseDetector(cfg), feats, [])


def feed(det, steps, g, r):
    """What update returns at each row: the alarm step once, else None."""
    return [det.update(feature=row) for row in rows(steps, g, r)]


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
    fired = feed(det, STEPS_STREAM, G_STREAM, R)
    assert [f for f in fired if f is not None] == [1100] and fired.index(1100) == 10 and det.alarm_step == 1100
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
    assert feed(det, [100, 200], [3.0, 2.0], [2.0, 2.0]) == [None, 200]
    assert first_alarm([100, 200], [3.0, 2.0000001], [2.0, 2.0], cfg) is None


def test_detector_never_alarms_without_decline_or_positive_peak():
    steps = list(range(100, 2100, 100))
    assert first_alarm(steps, [5.0] * 20, [2.0] * 20) is None  # flat g23
    assert first_alarm(steps, list(range(1, 21)), [2.0] * 20) is None  # rising g23
    assert first_alarm(steps, [0.0] * 20, [2.0] * 20) is None  # zero peak
    assert first_alarm([], [], []) is None


def test_detector_ignores_replayed_steps_and_latches():
    det = G23CollapseDetector(DetectorConfig(warmup_windows=0, persistence=1, stability_windows=1))
    # 100: peak; 100 again and 50: replays, ignored; 200: alarm; 300: latched, fires once
    assert feed(det, [100, 100, 50, 200, 300], [10.0, 1.0, 1.0, 1.0, 0.1], [2.0] * 5) == [None, None, None, 200, None]
    assert det.alarm_step == 200


def test_detector_state_dict_round_trip_mid_stream():
    R = [2.0] * len(G_STREAM)
    full = G23CollapseDetector()
    out_full = feed(full, STEPS_STREAM, G_STREAM, R)
    a = G23CollapseDetector()
    out = feed(a, STEPS_STREAM[:9], G_STREAM[:9], R[:9])
    state = json.loads(json.dumps(a.state_dict()))  # must survive a JSON checkpoint
    b = G23CollapseDetector()
    b.load_state_dict(state)
    out += feed(b, STEPS_STREAM[9:], G_STREAM[9:], R[9:])
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


@settings(max_examples=200, deadline=None)
@given(stream=_streams(), cfg=_configs)
def test_online_feeding_equals_offline_replay_with_evals_interleaved(stream, cfg):
    steps, g, r = stream
    feats = rows(steps, g, r)
    evals = [{"step": s, "grok_acc": 0.5} for s in steps[::2]]
    online = G23CollapseDetector(cfg)
    for f in feats:  # the trainer: snapshot, then eval at the same step
        online.update(feature=f)
        for e in evals:
            if e["step"] == f["step"]:
                online.update(eval=e)
    offline = G23CollapseDetector(cfg)
    assert replay(offline, list(reversed(feats)), evals) == online.alarm_step
    assert offline.state_dict() == online.state_dict()


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




def test_filling_windows_and_nonfinite_rows_are_skipped():
    # W = 4: rows with window < 4 never enter the rule (not even its peak or warm-up)
    steps = [100 * (i + 1) for i in range(12)]
    g = [100.0, 100.0, 100.0, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    win = [2, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4]
    feats = rows(steps, g, [2.0] * 12, window=win)
    cfg = dict(warmup_windows=0, persistence=1, stability_windows=1)
    assert replay(make_detector(params=cfg, window=4), feats, []) is None  # full windows: flat
    assert replay(make_detector(params=cfg, window=None), feats, []) == 400  # with filling ones
    feats[5]["nonfinite"], feats[5]["g23"] = True, 1000.0  # a diverged update is no peak
    assert replay(make_detector(params=cfg, window=4), feats, []) is None


def test_score_is_the_largest_decline_so_far():
    det = G23CollapseDetector()
    feed(det, [100, 200, 300, 400], [2.0, 8.0, 1.0, 4.0], [2.0] * 4)
    assert det.score == 8.0  # peak 8 / 1


def test_make_detector_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        make_detector("nope")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['factor'\]"):
        make_detector("g23_collapse", {"factor": 2})
    # a value of the wrong kind is named here, not a TypeError deep inside a replay
    with pytest.raises(ValueError, match=r"parameter decline_factor must be a number \(default 1.5\), got 'x'"):
        make_detector("g23_collapse", {"decline_factor": "x"})
    with pytest.raises(ValueError, match="must be a number"):
        make_detector("g23_collapse", {"decline_factor": True})
    assert make_detector("g23_collapse", {"decline_factor": 3}).config.decline_factor == 3


@pytest.mark.parametrize("name, params, says", [
    ("g23_collapse", {"decline_factor": 1.0}, "decline_factor must be a finite number > 1, got 1.0"),
    ("test_accuracy", {"level": 2}, "level must be a number in (0, 1], got 2"),  # would never alarm
    ("test_accuracy", {"level": 0}, "level must be a number in (0, 1], got 0"),  # alarms at step 0
    ("test_accuracy", {"level": float("nan")}, "level must be a number in (0, 1], got nan"),
    ("test_loss", {"decline": 1.5}, "decline must be a number in (0, 1), got 1.5"),
    ("test_loss", {"persistence": 0}, "persistence must be an integer >= 1, got 0"),
    ("test_loss", {"fit_acc": -0.1}, "fit_acc must be a number in (0, 1], got -0.1"),
    ("weight_decay", {"above": -1}, "above must be a finite number >= 0, got -1"),
    # JSON's Infinity and NaN reach here from --config: named, not an OverflowError
    ("g23_collapse", {"persistence": float("inf")}, "persistence must be an integer >= 1, got inf"),
    ("spectral_trend", {"smooth": float("nan")}, "smooth must be an integer >= 1, got nan"),
    ("spectral_trend", {"persistence": 1.5}, "persistence must be an integer >= 1, got 1.5"),
])
def test_make_detector_refuses_parameters_out_of_their_range_naming_the_detector(name, params, says):
    """A value of the right kind but outside what the rule can mean is refused, naming detector
    and parameter (the baselines took any number: level 2 scored a detector that never alarms)."""
    with pytest.raises(ValueError) as exc:
        make_detector(name, params)
    assert str(exc.value) == f"detector {name!r}: {says}"
    for cls_name, base in (("test_accuracy", {"level": 1.0}), ("test_loss", {"decline": 0.5, "fit_acc": 1.0}),
                           ("weight_decay", {"above": 0.0})):
        make_detector(cls_name, base)  # the ends a rule can mean are accepted


def test_frozen_presets_are_exactly_their_committed_files():
    """A preset is what detectors/<name>.json froze before its evaluation: same class, same
    parameters, a file for every preset and a preset for every file."""
    from pathlib import Path

    from edgesweep.analysis.detectors import PRESETS

    files = {p.stem: json.loads(p.read_text())
             for p in (Path(__file__).resolve().parents[1] / "detectors").glob("*.json")}
    assert set(files) == set(PRESETS) and files
    for name, doc in files.items():
        assert doc["name"] == name and PRESETS[name] == (doc["detector"], doc["params"])
        frozen, plain = make_detector(name), make_detector(doc["detector"], doc["params"])
        assert frozen.name == name and frozen.config == plain.config
    with pytest.raises(ValueError, match="frozen"):
        make_detector("edge_warning", {"factor": 3.0})
