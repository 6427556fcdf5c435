"""Sweep aggregation on constructed sweeps whose answers are known by construction.

Every trial below is written with the real storage writer (TrialWriter for features/evals,
write_table for trials). Its feature stream is built so that each event is computable by
hand (see ``SPEC`` and the comments next to the expected values):

* snapshots every 100 steps; the row at step s ends a window of min(s/100 + 1, 10) rows, so
  steps 100..800 are filling windows (2..9 rows) and full windows (10 rows) start at 900;
* g23 is NaN at step 100 (a 2-row window has no σ3), 10 before ``drop`` and 5 from ``drop`` on
  (a decline of exactly 2 > 1.5);
* gap ratio R = 3.0 on filling windows, 2.0 on full windows before the grok step, 2.2 from it
  on (so R is stable: any 5 consecutive full windows have rel. std ≤ 0.05 < 0.25);
* eval every 100 steps: grok_acc 0.1, then 0.97 from ``grok`` on; memo_acc 0.5, then 1.0 from
  ``memo`` on.

Detector by hand (warm-up 5 finite windows, decline ≤ peak/1.5, persistence 3): the first
declined window is ``drop`` (peak 10 has been seen, g23 = 5 ≤ 6.67, ≥ 5 earlier finite
windows when drop ≥ 800), so the alarm fires at drop + 200.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats as sps

from edgesweep.platform.aggregate import (AggregateConfig, aggregate_main, aggregate_sweep, family_of,
                                          summary_table, trial_events)
from edgesweep.storage import StorageError, TrialWriter, scan, write_table

SWEEP = "synth"
EVERY = 100
W = 10
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Synth:
    """One constructed trial. ``drop``: first step with g23 = 5 (None: g23 stays 10); ``grok``,
    ``memo``: first eval step above the thresholds (None: never); ``last``: last step written."""

    trial_id: str
    workload: str
    weight_decay: float
    seed: int
    drop: int | None
    grok: int | None
    memo: int | None
    last: int = 4000
    status: str = "completed"
    grok_threshold: float | None = None      # written into the trial's config
    grok_early: int | None = None            # eval step with grok_acc 0.92 (between 0.9 and 0.95)
    nonfinite_at: int | None = None          # a diverged window with garbage numbers

    @property
    def partition(self):
        return {"workload": self.workload, "optimizer": "adamw", "weight_decay": self.weight_decay}

    def k_star(self, step: int) -> int:
        """Filling windows: 3. Full windows: 3 when (step/100) % 7 < 3, else 2. For steps
        900..4000 that is 13 threes and 19 twos over full windows (mode 2), while over *all*
        windows the 8 filling 3s make 21 threes (mode 3)."""
        if step < 900:
            return 3
        return 3 if (step // 100) % 7 < 3 else 2

    def feature_row(self, step: int) -> dict:
        window = min(step // EVERY + 1, W)
        g23 = math.nan if window < 3 else (5.0 if self.drop is not None and step >= self.drop else 10.0)
        if window < W:
            r = 3.0
        else:
            r = 2.2 if self.grok is not None and step >= self.grok else 2.0
        row = {"step": step, "window": window, "sigma": [float(W - i) for i in range(window)],
               "k_star": self.k_star(step), "k_star_weighted": self.k_star(step),
               "gap_ratio": r, "gap": 1.0, "g23": g23, "adiabatic": 0.5, "bbp_ratio": 50.0,
               "alpha": [0.5] * window, "lr": 1e-3, "nonfinite": False}
        if step == self.nonfinite_at:
            # Were this row used, g23's peak would be 1000 (early = 1000) and R = 50 would break
            # the detector's stability window.
            row.update(g23=1000.0, gap_ratio=50.0, nonfinite=True)
        return row

    def eval_row(self, step: int) -> dict:
        acc = 0.1
        if self.grok_early is not None and step >= self.grok_early:
            acc = 0.92
        if self.grok is not None and step >= self.grok:
            acc = 0.97
        memo = 1.0 if self.memo is not None and step >= self.memo else 0.5
        return {"step": step, "grok_acc": acc, "test_acc": acc, "memo_acc": memo, "train_acc": memo,
                "test_loss": 1.0 - acc, "train_loss": 1.0 - memo}

    def trial_row(self, status: str | None = None, steps: int | None = None) -> dict:
        stop = {"after_grok": None, "memo_threshold": 0.99,
                "grok_threshold": 0.95 if self.grok_threshold is None else self.grok_threshold}
        config = {"trial_id": self.trial_id, "monitor": {"window": W, "every": EVERY}, "stop": stop}
        status = status or self.status
        done = status != "running"
        return {"trial_id": self.trial_id, **self.partition, "attempt": 0, "seed": self.seed,
                "status": status, "steps": (self.last if steps is None else steps),
                "config": json.dumps(config), "started_at": T0,
                "finished_at": T0 + timedelta(seconds=100) if done else None,
                "wall_s": 100.0 if done else None}


# The constructed sweep (10 trials). Expected per-run values are derived in EXPECTED below.
SPEC = [
    Synth("A_add_wd1_s42", "mod_add", 1.0, 42, drop=1500, grok=3000, memo=1000, nonfinite_at=1200),
    Synth("B_sub_wd1_s137", "mod_sub", 1.0, 137, drop=1200, grok=2500, memo=800),
    Synth("C_dyck_wd1_s42", "dyck", 1.0, 42, drop=2500, grok=2000, memo=900),
    Synth("D_dyck_wd1_s137", "dyck", 1.0, 137, drop=None, grok=2000, memo=900),
    Synth("E_add_wd0_s42", "mod_add", 0.0, 42, drop=1500, grok=None, memo=1000),
    Synth("F_sub_wd0_s137", "mod_sub", 0.0, 137, drop=None, grok=None, memo=1000),
    Synth("G_dyck_wd0_s42", "dyck", 0.0, 42, drop=1000, grok=3000, memo=900),
    Synth("H_dyck_wd0_s137", "dyck", 0.0, 137, drop=None, grok=None, memo=None),
    Synth("I_mul_wd1_s2024", "mod_mul", 1.0, 2024, drop=1500, grok=None, memo=1000, last=2000,
          status="running"),
    Synth("J_add_wd1_s2024", "mod_add", 1.0, 2024, drop=1500, grok=2600, memo=1000,
          grok_threshold=0.9, grok_early=2200),
]
BY_ID = {s.trial_id: s for s in SPEC}

# trial -> (grok, memo, g23_early, g23_grok, decline, preceded, alarm, lead, outcome)
EXPECTED = {
    # A: peak 10 before grok (the nonfinite 1000 at 1200 is skipped), g23 = 5 at step 3000:
    # decline 2; alarm at 1500+200; lead 3000-1700.
    "A_add_wd1_s42": (3000, 1000, 10.0, 5.0, 2.0, True, 1700, 1300, "hit"),
    "B_sub_wd1_s137": (2500, 800, 10.0, 5.0, 2.0, True, 1400, 1100, "hit"),
    # C: g23 still 10 at the grok step (decline 1 → not preceded); alarm after grok: late.
    "C_dyck_wd1_s42": (2000, 900, 10.0, 10.0, 1.0, False, 2700, -700, "late"),
    "D_dyck_wd1_s137": (2000, 900, 10.0, 10.0, 1.0, False, None, None, "miss"),
    # E: the caveat — declines and alarms, never groks: a false alarm, not preceded.
    "E_add_wd0_s42": (None, 1000, math.nan, math.nan, math.nan, False, 1700, None, "false_alarm"),
    "F_sub_wd0_s137": (None, 1000, math.nan, math.nan, math.nan, False, None, None, "quiet"),
    "G_dyck_wd0_s42": (3000, 900, 10.0, 5.0, 2.0, True, 1200, 1800, "hit"),
    "H_dyck_wd0_s137": (None, None, math.nan, math.nan, math.nan, False, None, None, "quiet"),
    # I: still running at step 2000, not grokked yet: provisionally a false alarm.
    "I_mul_wd1_s2024": (None, 1000, math.nan, math.nan, math.nan, False, 1700, None, "false_alarm"),
    # J: its own config says grok_threshold 0.9, so the 0.92 at 2200 is its grok (not 2600).
    "J_add_wd1_s2024": (2200, 1000, 10.0, 5.0, 2.0, True, 1700, 500, "hit"),
}


def write_trial(root, s: Synth, upto: int | None = None, start: int = EVERY, writer=None,
                compact: bool = True):
    """Stream s's rows for steps start..min(upto, s.last) and flush; optionally compact."""
    w = writer or TrialWriter(root, SWEEP, s.trial_id, 0, s.partition)
    end = s.last if upto is None else min(upto, s.last)
    for step in range(start, end + 1, EVERY):
        w.add("features", s.feature_row(step))
        w.add("evals", s.eval_row(step))
    w.flush()
    if compact:
        w.compact()
    return w


def write_trials(root, specs, **kw):
    write_table(root, SWEEP, "trials", pl.DataFrame([s.trial_row(**kw) for s in specs]))


def build_sweep(root, specs=SPEC) -> str:
    for s in specs:
        write_trial(root, s)
    write_trials(root, specs)
    return f"{root}/{SWEEP}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("agg")
    path = build_sweep(str(root))
    aggregate_sweep(path, use_ray=False, report=False)
    return path


def runs_of(path) -> pl.DataFrame:
    return scan(path, "runs").collect().sort("trial_id")


def summary_of(path) -> pl.DataFrame:
    return scan(path, "summary").collect().sort("scope", "weight_decay")


def same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == b


# ============================================================================ per-run events


def test_runs_events_match_construction(sweep):
    runs = runs_of(sweep)
    assert runs.get_column("trial_id").to_list() == sorted(EXPECTED)
    cols = ["grok_step", "memorization_step", "g23_early", "g23_grok", "g23_decline", "preceded",
            "alarm_step", "lead_steps", "detector_outcome"]
    for row in runs.iter_rows(named=True):
        want = dict(zip(cols, EXPECTED[row["trial_id"]]))
        got = {c: row[c] for c in cols}
        assert all(same(got[c], want[c]) for c in cols), (row["trial_id"], got, want)


def test_runs_identity_status_and_counts(sweep):
    runs = {r["trial_id"]: r for r in runs_of(sweep).iter_rows(named=True)}
    for tid, s in BY_ID.items():
        r = runs[tid]
        assert (r["sweep"], r["workload"], r["optimizer"], r["weight_decay"], r["seed"]) == \
            (SWEEP, s.workload, "adamw", s.weight_decay, s.seed)
        assert r["status"] == s.status and r["running"] == (s.status == "running")
        assert r["steps"] == s.last
        n_rows = s.last // EVERY
        assert r["n_evals"] == n_rows
        assert r["n_nonfinite"] == (1 if s.nonfinite_at else 0)
        assert r["n_windows"] == n_rows - r["n_nonfinite"]
        # full windows: steps 900..last minus a nonfinite one among them
        assert r["n_full_windows"] == (s.last - 900) // EVERY + 1 - (1 if s.nonfinite_at else 0)
        assert r["error"] is None
    assert runs["A_add_wd1_s42"]["family"] == "modular"
    assert runs["C_dyck_wd1_s42"]["family"] == "dyck"
    assert runs["J_add_wd1_s2024"]["grok_threshold"] == 0.9
    assert runs["A_add_wd1_s42"]["grok_threshold"] == 0.95


def test_k_star_mode_and_gap_ratio_use_full_windows(sweep):
    runs = {r["trial_id"]: r for r in runs_of(sweep).iter_rows(named=True)}
    s = BY_ID["D_dyck_wd1_s137"]
    steps = range(EVERY, s.last + 1, EVERY)
    # Independent count: the mode over full windows is 2, over all windows it would be 3.
    full = [s.k_star(t) for t in steps if t >= 900]
    every = [s.k_star(t) for t in steps]
    assert (full.count(2), full.count(3), every.count(2), every.count(3)) == (19, 13, 19, 21)
    assert runs["D_dyck_wd1_s137"]["k_star_mode"] == 2
    assert runs["D_dyck_wd1_s137"]["k_star_weighted_mode"] == 2
    # R is exactly 2.0 on full windows before the grok (3.0 filling, 2.2 after grok).
    for tid in ("A_add_wd1_s42", "D_dyck_wd1_s137", "F_sub_wd0_s137"):
        assert runs[tid]["gap_ratio_pre_grok"] == pytest.approx(2.0, abs=1e-12)


def test_family_mapping():
    assert [family_of(w) for w in ("mod_add", "mod_sq_cross", "multitask_3", "dyck", "scan",
                                   "tinystories", "gpt2", "other")] == \
        ["modular", "modular", "multitask", "dyck", "scan", "lm", "lm", "other"]


def test_trial_events_without_config_uses_default_thresholds():
    s = BY_ID["J_add_wd1_s2024"]
    steps = range(EVERY, s.last + 1, EVERY)
    f = pl.DataFrame([s.feature_row(t) for t in steps])
    e = pl.DataFrame([s.eval_row(t) for t in steps])
    trial = {"trial_id": s.trial_id, "workload": s.workload, "optimizer": "adamw",
             "weight_decay": 1.0, "seed": 1, "status": "completed", "steps": None, "config": None}
    row = trial_events(f, e, trial, AggregateConfig())
    assert row["grok_step"] == 2600 and row["lead_steps"] == 2600 - 1700  # 0.95 default
    # rows in any order give the same answer
    row2 = trial_events(f.reverse(), e.sample(fraction=1.0, shuffle=True, seed=3), trial)
    assert row2 == row


def test_trial_events_empty_trial():
    trial = {"trial_id": "x", "workload": "dyck", "optimizer": "adamw", "weight_decay": 0.0,
             "seed": 1, "status": "failed", "steps": 0, "config": "not json"}
    f = pl.DataFrame(schema={"step": pl.Int64, "g23": pl.Float64, "gap_ratio": pl.Float64,
                             "k_star": pl.Int32, "window": pl.Int32})
    e = pl.DataFrame(schema={"step": pl.Int64, "grok_acc": pl.Float64, "memo_acc": pl.Float64})
    row = trial_events(f, e, trial)
    assert row["grok_step"] is None and row["alarm_step"] is None
    assert row["detector_outcome"] == "quiet" and row["n_windows"] == 0 and row["steps"] == 0


# ============================================================================ summary


def cp(k, n):
    """Clopper–Pearson 95 % from scipy's binomtest (not the code under test)."""
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return ci.low, ci.high


def test_summary_counts_by_hand(sweep):
    s = {(r["scope"], r["weight_decay"]): r for r in summary_of(sweep).iter_rows(named=True)}
    assert set(s) == {("all", 1.0), ("all", 0.0), ("modular", 1.0), ("modular", 0.0),
                      ("dyck", 1.0), ("dyck", 0.0)}
    a1, a0 = s[("all", 1.0)], s[("all", 0.0)]
    # wd=1: A B C D I J; grokked A B C D J; preceded A B J; I still running
    assert (a1["n_runs"], a1["n_grokked"], a1["n_preceded"], a1["n_running"]) == (6, 5, 3, 1)
    assert a1["precedence"] == "3/6" and a1["preceded_of_grokked"] == "3/5"
    # detector: hits A B J, late C, miss D, false alarm I (provisional)
    assert (a1["hits"], a1["hits_with_lead"], a1["late"], a1["misses"], a1["false_alarms"],
            a1["quiet"], a1["n_alarmed"]) == (3, 3, 1, 1, 1, 0, 5)
    # leads 1300, 1100, 500: median 1100; numpy-linear quartiles 800 and 1200
    assert (a1["lead_n"], a1["lead_median"], a1["lead_q1"], a1["lead_q3"], a1["lead_min"],
            a1["lead_max"]) == (3, 1100.0, 800.0, 1200.0, 500.0, 1300.0)
    # wd=0: E F G H; G grokked and preceded; E false alarm; F, H quiet
    assert (a0["n_runs"], a0["n_grokked"], a0["n_preceded"], a0["precedence"]) == (4, 1, 1, "1/4")
    assert (a0["hits"], a0["false_alarms"], a0["quiet"], a0["lead_median"]) == (1, 1, 2, 1800.0)
    assert s[("modular", 1.0)]["precedence"] == "3/4" and s[("modular", 0.0)]["precedence"] == "0/2"
    assert s[("dyck", 1.0)]["precedence"] == "0/2" and s[("dyck", 0.0)]["precedence"] == "1/2"


def test_summary_intervals_and_fisher_against_scipy(sweep):
    s = {(r["scope"], r["weight_decay"]): r for r in summary_of(sweep).iter_rows(named=True)}
    a1, a0 = s[("all", 1.0)], s[("all", 0.0)]
    assert (a1["preceded_lo"], a1["preceded_hi"]) == pytest.approx(cp(3, 6), rel=1e-9)
    assert a1["preceded_rate"] == 0.5
    assert (a1["hit_lo"], a1["hit_hi"]) == pytest.approx(cp(3, 5), rel=1e-9)
    assert (a1["false_alarm_lo"], a1["false_alarm_hi"]) == pytest.approx(cp(1, 1), rel=1e-9)
    assert (a0["preceded_lo"], a0["preceded_hi"]) == pytest.approx(cp(1, 4), rel=1e-9)
    assert (a0["false_alarm_lo"], a0["false_alarm_hi"]) == pytest.approx(cp(1, 3), rel=1e-9)
    # Fisher, wd=1 vs wd=0 of the same scope: preceded [[3, 3], [1, 3]], any alarm [[5, 1], [2, 2]]
    assert a1["fisher_p_preceded"] == pytest.approx(sps.fisher_exact([[3, 3], [1, 3]]).pvalue, rel=1e-12)
    assert a1["fisher_odds_preceded"] == pytest.approx(3.0)  # 3·3 / (3·1)
    assert a1["fisher_p_alarm"] == pytest.approx(sps.fisher_exact([[5, 1], [2, 2]]).pvalue, rel=1e-12)
    assert a1["fisher_odds_alarm"] == pytest.approx(5.0)     # 5·2 / (1·2)
    m1 = s[("modular", 1.0)]  # [[3, 1], [0, 2]]
    assert m1["fisher_p_preceded"] == pytest.approx(sps.fisher_exact([[3, 1], [0, 2]]).pvalue, rel=1e-12)
    # the control arm itself has no comparison
    assert a0["fisher_p_preceded"] is None and a0["fisher_p_alarm"] is None


def test_summary_without_control_arm_has_null_fisher():
    rows = [{"trial_id": f"t{i}", "family": "modular", "weight_decay": 1.0, "running": False,
             "grok_step": 100, "preceded": True, "alarm_step": 50, "error": None} for i in range(3)]
    s = summary_table(pl.DataFrame(rows))
    assert s.height == 2  # all + modular
    assert s.get_column("fisher_p_preceded").is_null().all()
    assert s.get_column("fisher_p_alarm").is_null().all()
    assert s.row(0, named=True)["precedence"] == "3/3"
    lo, hi = cp(3, 3)
    assert s.row(0, named=True)["preceded_lo"] == pytest.approx(lo) and hi == 1.0


def test_scorecard_json_written(sweep):
    card = json.loads(Path(sweep, "scorecard.json").read_text())
    names = [p["name"] for p in card]
    assert "grokking_precedence" in names and "bbp_vacuous" in names
    prec = next(p for p in card if p["name"] == "grokking_precedence")
    # weight-decay arm: 3 of its 5 grokking runs preceded → the "every grokking event" claim FAILs
    assert prec["measured"]["weight_decay"]["preceded"] == 3
    assert prec["measured"]["weight_decay"]["grokked"] == 5
    assert prec["verdict"] == "FAIL"
    bbp = next(p for p in card if p["name"] == "bbp_vacuous")
    assert bbp["measured"]["median_of_run_medians"] == 50.0 and bbp["verdict"] == "PASS"


# ============================================================================ incremental / idempotent


def test_incremental_equals_once_at_the_end(tmp_path):
    live, once = str(tmp_path / "live"), str(tmp_path / "once")
    path_live = f"{live}/{SWEEP}"
    # The sweep "runs": every trial has written up to step 1600, trials say running.
    writers = {s.trial_id: write_trial(live, s, upto=1600, compact=False) for s in SPEC}
    write_trials(live, SPEC, status="running", steps=0)
    aggregate_sweep(path_live, use_ray=False, report=False)
    mid = {r["trial_id"]: r for r in runs_of(path_live).iter_rows(named=True)}
    assert all(r["running"] for r in mid.values())
    # B grokked at 2500, but at step 1600 it has not: alarm at 1400 is provisionally false.
    b = mid["B_sub_wd1_s137"]
    assert (b["grok_step"], b["alarm_step"], b["detector_outcome"], b["steps"]) == \
        (None, 1400, "false_alarm", 1600)
    # The rest arrives; trials finish.
    for s in SPEC:
        write_trial(live, s, start=1700, writer=writers[s.trial_id])
    write_trials(live, SPEC)
    aggregate_sweep(path_live, use_ray=False, report=False)
    aggregate_sweep(path_live, use_ray=False, report=False)  # idempotent: a rerun changes nothing

    build_sweep(once)
    aggregate_sweep(f"{once}/{SWEEP}", use_ray=False, report=False)
    assert_frame_equal(runs_of(path_live), runs_of(f"{once}/{SWEEP}"))
    assert_frame_equal(summary_of(path_live), summary_of(f"{once}/{SWEEP}"))
    assert Path(path_live, "scorecard.json").read_text() == Path(once, SWEEP, "scorecard.json").read_text()
    b = runs_of(path_live).filter(pl.col("trial_id") == "B_sub_wd1_s137").row(0, named=True)
    assert (b["grok_step"], b["detector_outcome"], b["lead_steps"]) == (2500, "hit", 1100)


def test_trial_without_trials_row_is_not_lost(tmp_path):
    root = str(tmp_path)
    build_sweep(root, SPEC[:2])
    write_trial(root, SPEC[2])  # C streamed data, its trials row never got written
    aggregate_sweep(f"{root}/{SWEEP}", use_ray=False, report=False)
    runs = {r["trial_id"]: r for r in runs_of(f"{root}/{SWEEP}").iter_rows(named=True)}
    c = runs["C_dyck_wd1_s42"]
    assert c["status"] == "unknown" and c["workload"] == "dyck" and c["weight_decay"] == 1.0
    assert (c["grok_step"], c["alarm_step"], c["detector_outcome"]) == (2000, 2700, "late")


# ============================================================================ errors


def test_a_trial_that_fails_to_evaluate_keeps_its_row(tmp_path, monkeypatch, capsys):
    import edgesweep.platform.aggregate as agg

    real = agg.trial_events

    def flaky(f, e, trial, cfg=None):
        if trial["trial_id"] == "B_sub_wd1_s137":
            raise ValueError("corrupt stream")
        return real(f, e, trial, cfg)

    monkeypatch.setattr(agg, "trial_events", flaky)
    path = build_sweep(str(tmp_path), SPEC[:3])
    with pytest.warns(RuntimeWarning, match="B_sub_wd1_s137: ValueError: corrupt stream"):
        assert aggregate_main(path, use_ray=False, report=False) == 0
    runs = {r["trial_id"]: r for r in runs_of(path).iter_rows(named=True)}
    assert runs["B_sub_wd1_s137"]["error"] == "ValueError: corrupt stream"
    assert runs["B_sub_wd1_s137"]["grok_step"] is None
    assert runs["A_add_wd1_s42"]["error"] is None and runs["A_add_wd1_s42"]["alarm_step"] == 1700
    # summary counts only the evaluated runs: A (hit, preceded) and C (late)
    s = summary_of(path).filter(pl.col("scope") == "all").row(0, named=True)
    assert (s["n_runs"], s["n_preceded"], s["hits"], s["late"]) == (2, 1, 1, 1)
    assert "1 trial(s) could not be evaluated" in capsys.readouterr().out


def test_missing_sweep_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "results" / "nope"
    with pytest.raises(StorageError, match=str(missing)):
        aggregate_sweep(str(missing), use_ray=False)
    assert aggregate_main(str(missing), use_ray=False, report=False) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_root_instead_of_sweep_and_empty_sweep(tmp_path):
    build_sweep(str(tmp_path / "root"), SPEC[:1])
    with pytest.raises(StorageError, match="pass ROOT/SWEEP"):
        aggregate_sweep(str(tmp_path / "root"), use_ray=False)
    (tmp_path / "root" / "empty" / "trials").mkdir(parents=True)
    with pytest.raises(StorageError, match="no trials"):
        aggregate_sweep(str(tmp_path / "root" / "empty"), use_ray=False)


def test_cli_aggregate_prints_table(sweep):
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "edgesweep", "aggregate", sweep, "--no-ray", "--no-report"],
                         capture_output=True, text=True, cwd=repo, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gap dynamics preceded grokking in 3/6 runs with weight decay, 1/4 without" in out.stdout
    assert "1 trial(s) still running" in out.stdout


# ============================================================================ Ray


@pytest.fixture(scope="module")
def ray_local():
    import ray  # a hard dependency: failing to import it must fail the test
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = tempfile.mkdtemp(prefix="esagg-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp,
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.ray
def test_ray_and_in_process_give_identical_tables(tmp_path, ray_local):
    path = build_sweep(str(tmp_path))
    aggregate_sweep(path, use_ray=False, report=False)
    runs_local, summary_local = runs_of(path), summary_of(path)
    card_local = Path(path, "scorecard.json").read_text()
    # 3 trials per task → 4 Ray tasks, each reading only its own trials' rows
    aggregate_sweep(path, use_ray=True, report=False, config=AggregateConfig(trials_per_task=3))
    assert_frame_equal(runs_of(path), runs_local)
    assert_frame_equal(summary_of(path), summary_local)
    assert Path(path, "scorecard.json").read_text() == card_local
    assert ray_local.is_initialized()  # a cluster we did not start is left running
