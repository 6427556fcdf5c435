"""Sweep aggregation on the hand-built sweep of ``tests/conftest.py`` (answers by construction).

Every trial is written with the real storage writer. By default the analysis uses full windows
only (10 rows, from step 900 on), so the detector's warm-up (5 finite windows, decline ≤
peak/1.5, persistence 3) ends at the 5th full finite window: a trial whose g23 drops at
``drop`` ≥ 1400 alarms at drop + 200; one that drops earlier alarms at 1600 (the 6th full
window is 1400; 1400, 1500, 1600 make the streak). A has a non-finite row at 1200 (skipped:
its 6th full finite window is 1500).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats as sps

from edgesweep.analysis import (AnalysisConfig, TrialRecord, TrialSettings, delayed_precedence, run_row,
                                summary_table)
from edgesweep.analysis.runs import RUNS_SCHEMA
from edgesweep.platform.aggregate import AggregateConfig, aggregate_main, aggregate_sweep
from edgesweep.storage import StorageError, StorageWarning, scan
from edgesweep.workloads.catalog import family

# trial -> (grok, memo, g23_early, g23_grok, decline, preceded, alarm, lead, outcome)
EXPECTED = {
    # A: peak 10 before grok (the nonfinite 1000 at 1200 is skipped), g23 = 5 at step 3000:
    # decline 2; alarm at 1500+200; lead 3000-1700.
    "A_add_wd1_s42": (3000, 1000, 10.0, 5.0, 2.0, True, 1700, 1300, "hit"),
    # B: drop at 1200, inside the warm-up of full windows: alarm at 1600, lead 900.
    "B_sub_wd1_s137": (2500, 800, 10.0, 5.0, 2.0, True, 1600, 900, "hit"),
    # C: g23 still 10 at the grok step (decline 1 → not preceded); alarm after grok: late.
    "C_dyck_wd1_s42": (2000, 900, 10.0, 10.0, 1.0, False, 2700, -700, "late"),
    "D_dyck_wd1_s137": (2000, 900, 10.0, 10.0, 1.0, False, None, None, "miss"),
    # E: the caveat — declines and alarms, never groks: a false alarm, not preceded.
    "E_add_wd0_s42": (None, 1000, math.nan, math.nan, math.nan, False, 1700, None, "false_alarm"),
    "F_sub_wd0_s137": (None, 1000, math.nan, math.nan, math.nan, False, None, None, "quiet"),
    # G: drop at 1000 (the 2nd full window; its peak 10 is the window at 900): alarm at 1600.
    "G_dyck_wd0_s42": (3000, 900, 10.0, 5.0, 2.0, True, 1600, 1400, "hit"),
    "H_dyck_wd0_s137": (None, None, math.nan, math.nan, math.nan, False, None, None, "quiet"),
    # I: still running at step 2000, not grokked yet: provisionally a false alarm.
    "I_mul_wd1_s2024": (None, 1000, math.nan, math.nan, math.nan, False, 1700, None, "false_alarm"),
    # J: its own config says grok_threshold 0.9, so the 0.92 at 2200 is its grok (not 2600).
    "J_add_wd1_s2024": (2200, 1000, 10.0, 5.0, 2.0, True, 1700, 500, "hit"),
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synth) -> str:
    path = synth.build_sweep(str(tmp_path_factory.mktemp("agg")))
    aggregate_sweep(path, use_ray=False, report=False)
    return path


def record(s, cfg=AnalysisConfig(), config=True, reverse=False):
    """A TrialRecord of the hand-built trial ``s`` straight from its rows (no storage)."""
    steps = range(100, s.last + 1, 100)
    f = pl.DataFrame([s.feature_row(t) for t in steps])
    e = pl.DataFrame([s.eval_row(t) for t in steps])
    if reverse:
        f, e = f.reverse(), e.sample(fraction=1.0, shuffle=True, seed=3)
    trial = dict(s.trial_row(), family=family(s.workload), sweep="synth")
    if not config:
        trial["config"] = None
    return TrialRecord(trial, TrialSettings.parse(trial["config"], cfg), f, e)


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


def test_runs_identity_status_and_counts(sweep, synth):
    runs = {r["trial_id"]: r for r in runs_of(sweep).iter_rows(named=True)}
    for tid, s in synth.BY_ID.items():
        r = runs[tid]
        assert (r["sweep"], r["workload"], r["optimizer"], r["weight_decay"], r["seed"]) == \
            (synth.SWEEP, s.workload, "adamw", s.weight_decay, s.seed)
        assert r["status"] == s.status and r["running"] == (s.status == "running")
        assert r["steps"] == s.last
        n_rows = s.last // synth.EVERY
        assert r["n_evals"] == n_rows
        assert r["n_nonfinite"] == (1 if s.nonfinite_at else 0)
        assert r["n_windows"] == n_rows - r["n_nonfinite"]
        # full windows: steps 900..last minus a nonfinite one among them
        assert r["n_full_windows"] == (s.last - 900) // synth.EVERY + 1 - (1 if s.nonfinite_at else 0)
        assert r["error"] is None
    assert runs["A_add_wd1_s42"]["family"] == "modular"
    assert runs["C_dyck_wd1_s42"]["family"] == "dyck"
    assert runs["J_add_wd1_s2024"]["grok_threshold"] == 0.9
    assert runs["A_add_wd1_s42"]["grok_threshold"] == 0.95


def test_k_star_mode_and_gap_ratio_use_full_windows(sweep, synth):
    runs = {r["trial_id"]: r for r in runs_of(sweep).iter_rows(named=True)}
    s = synth.BY_ID["D_dyck_wd1_s137"]
    steps = range(synth.EVERY, s.last + 1, synth.EVERY)
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
    assert [family(w) for w in ("mod_add", "mod_sq_cross", "multitask_3", "dyck", "scan",
                                "tinystories", "gpt2", "other")] == \
        ["modular", "modular", "multitask", "dyck", "scan", "lm", "lm", "other"]


def test_run_row_without_config_uses_default_thresholds_and_any_row_order(synth):
    s = synth.BY_ID["J_add_wd1_s2024"]
    row = run_row(record(s, config=False), AnalysisConfig())
    assert row["grok_step"] == 2600 and row["lead_steps"] == 2600 - 1700  # 0.95 default
    assert row["n_full_windows"] == 32  # W unknown: the largest window seen (10) counts as full
    assert run_row(record(s, config=False, reverse=True), AnalysisConfig()) == row


def test_run_row_of_an_empty_trial():
    trial = {"trial_id": "x", "workload": "dyck", "optimizer": "adamw", "weight_decay": 0.0,
             "seed": 1, "status": "failed", "steps": 0, "config": "not json"}
    f = pl.DataFrame(schema={"step": pl.Int64, "g23": pl.Float64, "gap_ratio": pl.Float64,
                             "k_star": pl.Int32, "window": pl.Int32})
    e = pl.DataFrame(schema={"step": pl.Int64, "grok_acc": pl.Float64, "memo_acc": pl.Float64})
    row = run_row(TrialRecord(dict(trial, config=None), TrialSettings.parse(None, AnalysisConfig()), f, e),
                  AnalysisConfig())
    assert row["grok_step"] is None and row["alarm_step"] is None
    assert row["detector_outcome"] == "quiet" and row["n_windows"] == 0 and row["steps"] == 0


@pytest.mark.parametrize("config, why", [
    ("not json", "its trials row's config is not valid JSON"),
    ("[1, 2, 3]", "its trials row's config is a JSON list, not an object"),
    ('{"stop": {"grok_threshold": "x"}, "monitor": {"window": 0}}',
     "unusable values: monitor.window = 0, stop.grok_threshold = 'x'"),
    ('{"stop": "x", "monitor": 7}', "unusable values: stop = 'x', monitor = 7 (not an object)"),
])
def test_a_trial_whose_config_cannot_be_read_is_incomplete_not_analysed_with_defaults(config, why):
    """A present but unreadable config used to fall back to the default criterion silently
    (a trial configured with grok_threshold 0.9 was analysed at 0.95): now the trial is
    incomplete, with the reason; a row with no config at all (older writers) keeps the defaults."""
    trial = {"trial_id": "x", "workload": "dyck", "optimizer": "adamw", "weight_decay": 0.0,
             "seed": 1, "status": "completed", "steps": 0, "config": config}
    f = pl.DataFrame(schema={"step": pl.Int64, "g23": pl.Float64, "gap_ratio": pl.Float64,
                             "k_star": pl.Int32, "window": pl.Int32})
    e = pl.DataFrame(schema={"step": pl.Int64, "grok_acc": pl.Float64, "memo_acc": pl.Float64})
    settings = TrialSettings.parse(config, AnalysisConfig())
    assert settings.grok_threshold == AnalysisConfig().grok_threshold and why in settings.problem
    row = run_row(TrialRecord(trial, settings, f, e), AnalysisConfig())
    assert row["status"] == "incomplete" and why in row["error"] and row["detector_outcome"] is None
    assert TrialSettings.parse('{"stop": {"grok_threshold": 1}, "monitor": {"window": 10}}',
                               AnalysisConfig()).problem is None  # an integral threshold is a number


@pytest.mark.parametrize("wd", [math.nan, -0.1, None, math.inf])
def test_a_trial_without_a_usable_weight_decay_is_incomplete_not_counted_in_an_arm(wd):
    """The spec allows only finite numbers ≥ 0; a trials row with anything else (damaged or
    foreign) had no consistent arm: Polars put NaN in "wd>0" (NaN sorts above every number,
    and made the arm's value null) while the detectors read it as not > 0, and −0.1 or null
    fell out of every arm, the "all" scope's included, without a word."""
    trial = {"trial_id": "x", "workload": "mod_add", "optimizer": "adamw", "weight_decay": wd,
             "seed": 1, "status": "completed", "steps": 0, "config": '{"monitor": {"window": 4}}'}
    f = pl.DataFrame(schema={"step": pl.Int64, "g23": pl.Float64, "gap_ratio": pl.Float64,
                             "k_star": pl.Int32, "window": pl.Int32})
    e = pl.DataFrame(schema={"step": pl.Int64, "grok_acc": pl.Float64, "memo_acc": pl.Float64})
    rec = TrialRecord(trial, TrialSettings.parse(trial["config"], AnalysisConfig()), f, e)
    row = run_row(rec, AnalysisConfig())
    assert row["status"] == "incomplete" and f"weight_decay is {wd!r}, not a number ≥ 0" in row["error"]
    assert summary_table(pl.DataFrame([row], schema=RUNS_SCHEMA, orient="row")).height == 0  # no arm, no scope


def test_filling_windows_are_out_of_the_precedence_by_default_and_in_beside_it(synth):
    # g23 drops at 500 (a 6-row filling window) and stays 5: over full windows there is no
    # decline (early 5, grok 5); over every window the filling peak of 10 gives decline 2.
    s = synth.Synth("K_add_wd1", "mod_add", 1.0, 7, drop=500, grok=2000, memo=800)
    full = run_row(record(s), AnalysisConfig())
    assert (full["g23_early"], full["g23_decline"], full["preceded"]) == (5.0, 1.0, False)
    assert (full["g23_decline_all_windows"], full["preceded_all_windows"]) == (2.0, True)
    every = run_row(record(s), AnalysisConfig(full_windows_only=False))
    assert (every["g23_decline"], every["preceded"]) == (2.0, True)
    # On full windows only the detector never sees a decline. With filling windows its warm-up
    # is the 5 finite windows 200..600, so 700, 800, 900 make the streak (the R window at 900,
    # [3, 3, 3, 3, 2], has rel. std 0.14 ≤ 0.25) → alarm at 900.
    assert full["alarm_step"] is None and every["alarm_step"] == 900
    # a run stopped after 6 snapshots at W = 10 has no full window (one rule everywhere)
    short = run_row(record(synth.Synth("L_add_wd1", "mod_add", 1.0, 7, drop=None, grok=None, memo=None,
                                       last=600)), AnalysisConfig())
    assert (short["n_windows"], short["n_full_windows"], short["k_star_mode"]) == (6, 0, None)


def test_runs_and_summary_carry_the_analysis_config(sweep):
    cfg = json.loads(runs_of(sweep)["analysis_config"][0])
    assert cfg["detector"] == "g23_collapse" and cfg["full_windows_only"] is True
    assert cfg["precedence_ratio"] == 1.5
    assert summary_of(sweep)["analysis_config"].unique().to_list() == [runs_of(sweep)["analysis_config"][0]]


# ============================================================================ summary


def test_summary_counts_by_hand(sweep):
    s = {(r["scope"], r["weight_decay"]): r for r in summary_of(sweep).iter_rows(named=True)}
    assert set(s) == {("all", 1.0), ("all", 0.0), ("modular", 1.0), ("modular", 0.0),
                      ("dyck", 1.0), ("dyck", 0.0)}
    a1, a0 = s[("all", 1.0)], s[("all", 0.0)]
    # wd=1: A B C D I J; grokked A B C D J; preceded A B J; I still running
    assert (a1["n_runs"], a1["n_grokked"], a1["n_preceded"], a1["n_running"]) == (6, 5, 3, 1)
    assert a1["precedence"] == "3/6" and a1["preceded_of_grokked"] == "3/5"
    # detector: hits A B J, late C, miss D, false alarm I (provisional)
    assert (a1["hits"], a1["late"], a1["misses"], a1["false_alarms"],
            a1["quiet"], a1["n_alarmed"]) == (3, 1, 1, 1, 0, 5)
    # leads 1300, 900, 500: median 900; numpy-linear quartiles 700 and 1100
    assert (a1["lead_n"], a1["lead_median"], a1["lead_q1"], a1["lead_q3"], a1["lead_min"],
            a1["lead_max"]) == (3, 900.0, 700.0, 1100.0, 500.0, 1300.0)
    # wd=0: E F G H; G grokked and preceded; E false alarm; F, H quiet
    assert (a0["n_runs"], a0["n_grokked"], a0["n_preceded"], a0["precedence"]) == (4, 1, 1, "1/4")
    assert (a0["hits"], a0["false_alarms"], a0["quiet"], a0["lead_median"]) == (1, 1, 2, 1400.0)
    # the all-windows count agrees here (every peak of g23 lies in full windows too)
    assert (a1["precedence_all_windows"], a0["precedence_all_windows"]) == ("3/6", "1/4")
    assert s[("modular", 1.0)]["precedence"] == "3/4" and s[("modular", 0.0)]["precedence"] == "0/2"
    assert s[("dyck", 1.0)]["precedence"] == "0/2" and s[("dyck", 0.0)]["precedence"] == "1/2"


def test_summary_intervals_and_fisher_against_scipy(sweep, synth):
    cp = synth.cp
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


def test_summary_without_control_arm_has_null_fisher(synth):
    rows = [{"trial_id": f"t{i}", "family": "modular", "weight_decay": 1.0, "running": False,
             "grok_step": 100, "preceded": True, "preceded_all_windows": True, "alarm_step": 50,
             "error": None} for i in range(3)]
    s = summary_table(pl.DataFrame(rows))
    assert s.height == 2  # all + modular
    assert s.get_column("fisher_p_preceded").is_null().all()
    assert s.get_column("fisher_p_alarm").is_null().all()
    assert s.row(0, named=True)["precedence"] == "3/3"
    lo, hi = synth.cp(3, 3)
    assert s.row(0, named=True)["preceded_lo"] == pytest.approx(lo) and hi == 1.0


def test_scorecard_json_written(sweep):
    doc = json.loads(Path(sweep, "scorecard.json").read_text())
    assert doc["analysis_config"]["detector"] == "g23_collapse"
    card = doc["predictions"]
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


def test_incremental_equals_once_at_the_end(tmp_path, synth):
    live, once = str(tmp_path / "live"), str(tmp_path / "once")
    SPEC, SWEEP = synth.SPEC, synth.SWEEP
    path_live = f"{live}/{SWEEP}"
    # The sweep "runs": every trial has written up to step 1600, trials say running.
    writers = {s.trial_id: synth.write_trial(live, s, upto=1600, compact=False) for s in SPEC}
    synth.write_trials(live, SPEC, status="running", steps=0)
    aggregate_sweep(path_live, use_ray=False, report=False)
    mid = {r["trial_id"]: r for r in runs_of(path_live).iter_rows(named=True)}
    assert all(r["running"] for r in mid.values())
    # B grokked at 2500, but at step 1600 it has not: alarm at 1600 is provisionally false.
    b = mid["B_sub_wd1_s137"]
    assert (b["grok_step"], b["alarm_step"], b["detector_outcome"], b["steps"]) == \
        (None, 1600, "false_alarm", 1600)
    # The rest arrives; trials finish.
    for s in SPEC:
        synth.write_trial(live, s, start=1700, writer=writers[s.trial_id])
    synth.write_trials(live, SPEC)
    aggregate_sweep(path_live, use_ray=False, report=False)
    aggregate_sweep(path_live, use_ray=False, report=False)  # idempotent: a rerun changes nothing

    synth.build_sweep(once)
    aggregate_sweep(f"{once}/{SWEEP}", use_ray=False, report=False)
    assert_frame_equal(runs_of(path_live), runs_of(f"{once}/{SWEEP}"))
    assert_frame_equal(summary_of(path_live), summary_of(f"{once}/{SWEEP}"))
    assert Path(path_live, "scorecard.json").read_text() == Path(once, SWEEP, "scorecard.json").read_text()
    b = runs_of(path_live).filter(pl.col("trial_id") == "B_sub_wd1_s137").row(0, named=True)
    assert (b["grok_step"], b["detector_outcome"], b["lead_steps"]) == (2500, "hit", 900)


def test_a_trial_compacting_during_the_read_does_not_fail_the_others(tmp_path, synth, monkeypatch):
    """A trial that finishes while `aggregate` reads a running sweep compacts its parts and
    deletes them: the read planned before that finds a listed file gone (a real
    FileNotFoundError from the real scan here). It is read again from a fresh listing, and the
    result equals the aggregate of the same rows at rest."""
    from edgesweep.analysis import record

    live, rest = str(tmp_path / "live"), str(tmp_path / "rest")
    specs = synth.SPEC[:3]
    writers = {s.trial_id: synth.write_trial(live, s, compact=False) for s in specs}
    synth.write_trials(live, specs)
    calls, listing = [], record.read_checked

    def read_then_finish(sp, command):
        checked = listing(sp, command)
        calls.append(command)
        if len(calls) == 1:  # between the listing and the read, the trials finish and compact
            for w in writers.values():
                assert w.compact()
        return checked

    monkeypatch.setattr(record, "read_checked", read_then_finish)
    aggregate_sweep(f"{live}/{synth.SWEEP}", use_ray=False, report=False)
    assert len(calls) == 2, "the stale read was not retried"
    got = runs_of(f"{live}/{synth.SWEEP}")
    assert got["error"].null_count() == got.height, got["error"].to_list()

    synth.build_sweep(rest, specs)
    monkeypatch.undo()
    aggregate_sweep(f"{rest}/{synth.SWEEP}", use_ray=False, report=False)
    assert_frame_equal(got, runs_of(f"{rest}/{synth.SWEEP}"))


def test_detect_also_rereads_when_a_trial_compacts_during_the_read(tmp_path, synth, monkeypatch):
    """The same race for `detect`: the stale read raised FileNotFoundError (exit 2); now it
    reads again and scores what a read at rest scores."""
    from edgesweep.analysis import record
    from edgesweep.platform import detect

    live, rest = str(tmp_path / "live"), str(tmp_path / "rest")
    writers = [synth.write_trial(live, s, compact=False) for s in synth.SPEC]
    synth.write_trials(live, synth.SPEC)
    calls, listing = [], record.read_checked

    def read_then_finish(sp, command):
        checked = listing(sp, command)
        calls.append(command)
        if len(calls) == 1:
            for w in writers:
                assert w.compact()
        return checked

    monkeypatch.setattr(record, "read_checked", read_then_finish)
    got = detect.run_detection(f"{live}/{synth.SWEEP}", write=False)
    assert calls == ["detect", "detect"]
    synth.build_sweep(rest)
    monkeypatch.undo()
    want = detect.run_detection(f"{rest}/{synth.SWEEP}", write=False)
    assert [json.dumps(r.row(), sort_keys=True) for r in got["results"]] == \
        [json.dumps(r.row(), sort_keys=True) for r in want["results"]]


def test_trial_without_trials_row_is_not_lost_and_is_named_incomplete(tmp_path, synth):
    """A trial writes its trials row ("running") before any other row, so rows without one
    mean the trials table lost it: the trial keeps its runs row (workload, weight decay) as
    incomplete, out of the counts, and verify names it — where it used to count as an
    "unknown" run and verify said OK (a deleted trials/ folder aggregated to an empty table)."""
    from edgesweep.storage import verify
    root = str(tmp_path)
    path = synth.build_sweep(root, synth.SPEC[:2])
    synth.write_trial(root, synth.SPEC[2])  # C streamed data, its trials row is gone
    with pytest.warns(StorageWarning, match="C_dyck_wd1_s42: it has features rows but no trials row"):
        aggregate_sweep(path, use_ray=False, report=False)
    runs = {r["trial_id"]: r for r in runs_of(path).iter_rows(named=True)}
    c = runs["C_dyck_wd1_s42"]
    assert c["status"] == "incomplete" and c["workload"] == "dyck" and c["weight_decay"] == 1.0
    assert "it has features rows but no trials row" in c["error"] and c["grok_step"] is None
    assert summary_of(path).filter(scope="all")["n_runs"].to_list() == [2]  # A and B, both wd 1
    assert [(p.kind, p.table, p.trial_id) for p in verify(path).damage] == [("missing", "trials", "C_dyck_wd1_s42")]


def test_rows_without_any_trials_table_are_unknown_and_said(tmp_path, capsys, synth):
    """A folder written without the driver (no trials table, no _spec.json/_driver.json): its
    trials cannot be judged damaged (verify says OK), so they stay "unknown", out of the counts —
    and aggregate says so instead of printing an empty table alone."""
    from edgesweep.storage import verify
    synth.write_trial(str(tmp_path), synth.SPEC[0])
    path = f"{tmp_path}/{synth.SWEEP}"
    assert verify(path).ok
    assert aggregate_main(path, use_ray=False, report=False) == 0
    out = capsys.readouterr().out
    assert ("1 trial(s) have stored rows but no trials row (status unknown; left out of the counts): "
            "A_add_wd1_s42; the trials row is where edgesweep's driver records how a trial ended, and this folder "
            "shows no sign of that driver") in out


# ============================================================================ errors


def test_a_trial_that_fails_to_evaluate_keeps_its_row(tmp_path, monkeypatch, capsys, synth):
    import edgesweep.platform.aggregate as agg

    real = agg.run_row

    def flaky(rec, cfg):
        if rec.trial_id == "B_sub_wd1_s137":
            raise ValueError("corrupt stream")
        return real(rec, cfg)

    monkeypatch.setattr(agg, "run_row", flaky)
    path = synth.build_sweep(str(tmp_path), synth.SPEC[:3])
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


def test_a_failing_scorecard_writes_nothing(tmp_path, monkeypatch, synth):
    """runs, summary and scorecard.json change together or not at all: the outputs of the last
    aggregation stay when the next one fails before its last table is computed."""
    import edgesweep.platform.aggregate as agg

    root = str(tmp_path)
    path = synth.build_sweep(root, synth.SPEC[:2])
    aggregate_sweep(path, use_ray=False, report=False)
    before = (runs_of(path), summary_of(path), Path(path, "scorecard.json").read_text())
    synth.write_trial(root, synth.SPEC[2])  # one more trial: the next aggregation differs
    synth.write_trials(root, synth.SPEC[:3])

    def broken(*args, **kwargs):
        raise ValueError("scorecard bug")

    monkeypatch.setattr(agg, "scorecard", broken)
    with pytest.raises(ValueError, match="scorecard bug"):
        aggregate_sweep(path, use_ray=False, report=False)
    assert_frame_equal(runs_of(path), before[0])
    assert_frame_equal(summary_of(path), before[1])
    assert Path(path, "scorecard.json").read_text() == before[2]
    monkeypatch.undo()
    aggregate_sweep(path, use_ray=False, report=False)
    assert runs_of(path).height == before[0].height + 1


def test_missing_sweep_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "results" / "nope"
    with pytest.raises(StorageError, match=str(missing)):
        aggregate_sweep(str(missing), use_ray=False)
    assert aggregate_main(str(missing), use_ray=False, report=False) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_root_instead_of_sweep_and_empty_sweep(tmp_path, synth):
    synth.build_sweep(str(tmp_path / "root"), synth.SPEC[:1])
    # A storage root: the message names the sweep folder to pass instead.
    with pytest.raises(StorageError, match=re.escape(f"storage root holding the sweep folder {synth.SWEEP}: pass it, "
                                                     f"e.g. {tmp_path / 'root' / synth.SWEEP}")):
        aggregate_sweep(str(tmp_path / "root"), use_ray=False)
    (tmp_path / "other" / "notes").mkdir(parents=True)  # a folder of something else
    with pytest.raises(StorageError, match="it holds notes: if this is a storage root, pass ROOT/SWEEP"):
        aggregate_sweep(str(tmp_path / "other"), use_ray=False)
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
    assert "All 4 counted runs generalised with a delay" in out.stdout


# ============================================================================ Ray


@pytest.mark.ray
def test_ray_and_in_process_give_identical_tables(tmp_path, local_ray, synth):
    path = synth.build_sweep(str(tmp_path))
    aggregate_sweep(path, use_ray=False, report=False)
    runs_local, summary_local = runs_of(path), summary_of(path)
    card_local = Path(path, "scorecard.json").read_text()
    # 3 trials per task → 4 Ray tasks, each reading only its own trials' rows
    aggregate_sweep(path, use_ray=True, report=False, config=AggregateConfig(trials_per_task=3))
    assert_frame_equal(runs_of(path), runs_local)
    assert_frame_equal(summary_of(path), summary_local)
    assert Path(path, "scorecard.json").read_text() == card_local
    assert local_ray.is_initialized()  # a cluster we did not start is left running


def test_every_run_is_classified(sweep):
    # fit (train ≥ 0.9) = the memorisation step of the construction; test accuracy 0.1 there.
    # A: fit 1000, grok 3000 (2000 later) → grokked; D: 900 → 2000; J: its own 0.9 threshold is
    # met by the 0.92 at 2200; E, F, H, I never cross → censored (H never fits either).
    runs = {r["trial_id"]: r for r in runs_of(sweep).iter_rows(named=True)}
    assert {t: r["generalisation"] for t, r in runs.items()} == {
        "A_add_wd1_s42": "grokked", "B_sub_wd1_s137": "grokked", "C_dyck_wd1_s42": "grokked",
        "D_dyck_wd1_s137": "grokked", "E_add_wd0_s42": "censored", "F_sub_wd0_s137": "censored",
        "G_dyck_wd0_s42": "grokked", "H_dyck_wd0_s137": "censored", "I_mul_wd1_s2024": "censored",
        "J_add_wd1_s2024": "grokked"}
    assert (runs["A_add_wd1_s42"]["fit_step"], runs["A_add_wd1_s42"]["grok_delay"]) == (1000, 2000)
    assert runs["H_dyck_wd0_s137"]["fit_step"] is None


def test_the_paper_count_with_only_delayed_generalisation(sweep):
    """Every counted run of the construction grokked with a delay (A B J with weight decay, G
    without), so both counts agree. Made immediate, B drops out of the delayed count and is
    named by workload; a run that failed to evaluate (J with an error) leaves both arms' counts,
    as it leaves the summary's."""
    from edgesweep.platform.report import delayed_sentence

    runs = runs_of(sweep)
    arms = delayed_precedence(runs)
    assert {k: (a["n_runs"], a["n_preceded"], a["n_preceded_delayed"], a["undelayed"]) for k, a in arms.items()} == {
        "wd>0": (6, 3, 3, []), "wd=0": (4, 1, 1, [])}
    edited = runs.with_columns(
        generalisation=pl.when(pl.col("trial_id") == "B_sub_wd1_s137").then(pl.lit("immediate"))
        .otherwise(pl.col("generalisation")),
        error=pl.when(pl.col("trial_id") == "J_add_wd1_s2024").then(pl.lit("boom")).otherwise(pl.col("error")))
    arms = delayed_precedence(edited)
    assert arms["wd>0"] == {"n_runs": 5, "n_preceded": 2, "n_preceded_delayed": 1, "undelayed": ["B_sub_wd1_s137"]}
    assert summary_table(edited).filter(scope="all", arm="wd>0")["precedence"].item() == "2/5"
    assert delayed_sentence(edited) == (
        "1 of the 3 counted runs generalised without a delay (`generalisation` = immediate: mod_sub × 1); "
        "counting only delayed generalisation, the meaning of grokking in DESIGN.md 1.3, gives 1/5 with "
        "weight decay, 1/4 without.")
    assert delayed_sentence(runs.drop("generalisation")) is None  # runs tables from before it existed


# ============================================================================ damaged storage


def _part(root, sweep, table, trial_id):
    files = [p for p in Path(root, sweep, table).rglob(f"{trial_id}.*.parquet")]
    assert len(files) == 1, files
    return files[0]


def test_a_deleted_part_marks_its_trial_incomplete_and_the_rest_aggregate(tmp_path, synth):
    path = synth.build_sweep(str(tmp_path), synth.SPEC[:3])
    gone = _part(tmp_path, synth.SWEEP, "evals", "B_sub_wd1_s137")
    gone.unlink()
    with pytest.warns(StorageWarning, match=f"{gone.name}.*missing"):
        aggregate_sweep(path, use_ray=False, report=False)
    runs = {r["trial_id"]: r for r in runs_of(path).iter_rows(named=True)}
    b = runs["B_sub_wd1_s137"]
    assert b["status"] == "incomplete" and gone.name in b["error"] and b["grok_step"] is None
    assert runs["A_add_wd1_s42"]["status"] == "completed" and runs["A_add_wd1_s42"]["alarm_step"] == 1700
    s = summary_of(path).filter(pl.col("scope") == "all").row(0, named=True)
    assert (s["n_runs"], s["n_preceded"]) == (2, 1)  # A (preceded) and C; B is out of the counts


def test_a_sweep_with_no_usable_trial_keeps_its_previous_aggregation(tmp_path, synth):
    """Every trial's evaluations deleted (a table folder removed): aggregate used to exit 0 and
    replace good runs, summary and scorecard.json with empty ones, and detect its
    detection.json; now both refuse, name the first trial, and leave the outputs alone."""
    import shutil

    from edgesweep.platform.detect import detect_main

    path = synth.build_sweep(str(tmp_path), synth.SPEC[:3])
    aggregate_sweep(path, use_ray=False, report=False)
    assert detect_main(path) == 0
    kept = {p: p.read_bytes() for p in Path(path).rglob("*")
            if p.is_file() and p.parts[len(Path(path).parts)] in ("runs", "summary", "scorecard.json", "detection",
                                                                 "detection.json")}
    assert len(kept) >= 5
    shutil.rmtree(Path(path, "evals"))
    with pytest.warns(StorageWarning):
        with pytest.raises(StorageError, match=r"none of the 3 trial\(s\) can be analysed \(first: A_add_wd1_s42, "
                                               r"incomplete: .*\); nothing written \(runs, summary, scorecard.json "
                                               r"and the report of an earlier aggregation, if any, are kept"):
            aggregate_sweep(path, use_ray=False, report=False)
    with pytest.warns(StorageWarning):
        assert detect_main(path) == 2
    assert {p: p.read_bytes() for p in kept} == kept
    # a folder written without the driver (rows only: status unknown) aggregates, twice, and
    # stays "OK" for verify — its runs table lists only unknown trials, no sign of trials rows
    from edgesweep.storage import verify
    bare = tmp_path / "bare"
    synth.write_trial(str(bare), synth.SPEC[0])
    for _ in range(2):
        aggregate_sweep(f"{bare}/{synth.SWEEP}", use_ray=False, report=False)
        assert verify(f"{bare}/{synth.SWEEP}").ok


def test_verify_names_a_whole_trials_table_gone_from_an_aggregated_sweep(tmp_path, synth):
    """A sweep folder without the driver's files (a committed or copied one) but with its
    `runs` table had its trials rows once — aggregation refuses a sweep without them — so
    rows without a trials row are damage there too; verify said OK with the table deleted."""
    import shutil

    from edgesweep.storage import verify

    path = synth.build_sweep(str(tmp_path), synth.SPEC[:2])
    aggregate_sweep(path, use_ray=False, report=False)
    for name in ("_driver.json", "_spec.json", "_tune"):
        assert not Path(path, name).exists()
    assert verify(path).ok
    shutil.rmtree(Path(path, "trials"))
    res = verify(path)
    assert not res.ok
    assert sorted(p.trial_id for p in res.problems) == ["A_add_wd1_s42", "B_sub_wd1_s137"]
    assert all("rows but no trials row" in p.detail for p in res.problems)


@pytest.mark.parametrize("table, says", [
    ("evals", "its trials row says completed at step 4000 but it has no evaluations"),
    # B's snapshots every 100 steps end at 4000 (tests/conftest.py)
    ("features", "its trials row says completed at step 4000 but it has no features rows (a snapshot every "
                 "100 steps: the last row at 4000)"),
])
def test_a_part_deleted_with_its_seal_record_is_caught_by_the_trials_row(tmp_path, synth, table, says):
    """Without a seal record to miss, the trial's own row still says how far it got — for its
    evaluations and its features alike (without the features check, B read as a finished run
    with no windows: "not preceded", no error, and verify said OK)."""
    from edgesweep.storage import verify
    assert verify(synth.build_sweep(str(tmp_path / "intact"), synth.SPEC)).ok  # no false alarm: I runs
    path = synth.build_sweep(str(tmp_path), synth.SPEC[:2])
    part = _part(tmp_path, synth.SWEEP, table, "B_sub_wd1_s137")
    part.unlink()
    for rec in Path(tmp_path, synth.SWEEP, table).rglob("_sealed/B_sub_wd1_s137.*"):
        rec.unlink()
    with pytest.warns(StorageWarning, match=re.escape(f"B_sub_wd1_s137: {says}")):
        aggregate_sweep(path, use_ray=False, report=False)
    b = runs_of(path).filter(pl.col("trial_id") == "B_sub_wd1_s137").row(0, named=True)
    assert b["status"] == "incomplete" and says in b["error"]
    # verify sees it too (it said OK: no file check can miss a file that no record names)
    report = verify(path)
    assert [(p.kind, p.table, p.trial_id) for p in report.damage] == [("missing", table, "B_sub_wd1_s137")], \
        report.problems
    assert says in report.damage[0].detail


@pytest.mark.parametrize("table", ["features", "trials"])
def test_a_deleted_table_folder_is_missing_for_its_trials(tmp_path, synth, table):
    """A whole table folder deleted leaves no seal record to miss either. Without features,
    every finished trial is missing its rows (I, still running, is not judged); without the
    trials table of a sweep the driver ran (its _spec.json), every trial is — and the counts
    leave them out instead of reading them as runs without windows; with no trial left, the
    aggregation refuses rather than write an empty summary."""
    from edgesweep.storage import verify
    path = synth.build_sweep(str(tmp_path), synth.SPEC)
    Path(path, "_spec.json").write_text("{}")
    shutil.rmtree(Path(path, table))
    report = verify(path)
    damaged = sorted(EXPECTED) if table == "trials" else sorted(t for t in EXPECTED if t != "I_mul_wd1_s2024")
    assert sorted(p.trial_id for p in report.damage) == damaged
    assert {(p.kind, p.table) for p in report.damage} == {("missing", table)}
    with pytest.warns(StorageWarning):
        if table == "trials":  # no trial usable: nothing is written (no empty tables over good ones)
            with pytest.raises(StorageError, match=r"none of the 10 trial\(s\) can be analysed"):
                aggregate_sweep(path, use_ray=False, report=False)
            assert not Path(path, "runs").exists()
            return
        aggregate_sweep(path, use_ray=False, report=False)
    assert runs_of(path).group_by("status").len().sort("status").rows() == [("incomplete", 9), ("running", 1)]


def test_corrupt_bytes_in_a_part_name_the_file_and_spare_the_others(tmp_path, synth):
    path = synth.build_sweep(str(tmp_path), synth.SPEC[:3])
    bad = _part(tmp_path, synth.SWEEP, "features", "A_add_wd1_s42")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = b"\xff" * 8
    bad.write_bytes(bytes(data))
    with pytest.warns(StorageWarning, match=f"{bad.name}.*corrupt"):
        assert aggregate_main(path, use_ray=False, report=False) == 0
    runs = {r["trial_id"]: r for r in runs_of(path).iter_rows(named=True)}
    assert runs["A_add_wd1_s42"]["status"] == "incomplete" and bad.name in runs["A_add_wd1_s42"]["error"]
    assert runs["B_sub_wd1_s137"]["alarm_step"] == 1600 and runs["C_dyck_wd1_s42"]["alarm_step"] == 2700


def test_aggregate_and_report_on_a_damaged_part_finish_and_name_it_once(tmp_path, synth):
    """The commands, with the report: the damaged trial is `incomplete` in runs and in the
    report, the report is written (it reads on past the part), and each command names the file
    in one warning line — no traceback, no source line of ours, no exit 2 after the tables were
    already rewritten."""
    path = synth.build_sweep(str(tmp_path), synth.SPEC[:3])
    bad = _part(tmp_path, synth.SWEEP, "features", "A_add_wd1_s42")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    for argv in (["aggregate", path, "--no-ray"], ["report", path]):
        res = subprocess.run([sys.executable, "-m", "edgesweep", *argv], capture_output=True, text=True,
                             timeout=300, cwd=Path(__file__).resolve().parents[1])
        assert res.returncode == 0, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"edgesweep {argv[0]}: warning: ") and str(bad) in lines[0] \
            and "sha256 mismatch" in lines[0], res.stderr
    report = Path(path, "report.md").read_text()
    assert "| incomplete | 1 |" in report, report[:2000]
    # and report.md says so itself, not only stderr: its figures lack that file's rows
    assert f"**1 stored file(s) could not be read** and are left out of the figures: {bad}:" in report
