"""The early-warning benchmark on a small synthetic sweep whose numbers are computed by hand."""

import json
import math

import polars as pl
import pytest

from edgesweep.analysis.detection import (DetectionConfig, auroc, criterion_over_spans, cross_validate,
                                          cross_validate_selection, cross_validation_problem, evaluate,
                                          label_runs)
from edgesweep.analysis.record import AnalysisConfig, TrialRecord, TrialSettings


def run(tid, wd, fit, test, last, workload="mod_add", status="completed", at_fit=0.02):
    """Evals every 100 steps to ``last``: train 0.5 → 0.95 at ``fit``; test accuracy from the
    {step: value} map ``test`` (piecewise constant from each step on), else ``at_fit``."""
    steps = list(range(0, last + 1, 100))
    acc, cur = [], at_fit
    for s in steps:
        cur = test.get(s, cur)
        acc.append(cur)
    evals = pl.DataFrame({"step": steps, "memo_acc": [0.95 if s >= fit else 0.5 for s in steps],
                          "grok_acc": acc, "test_loss": [1.0 - a for a in acc]})
    feats = pl.DataFrame({"step": steps[1:], "window": [10] * (len(steps) - 1),
                          "g23": [1.0] * (len(steps) - 1), "gap_ratio": [2.0] * (len(steps) - 1),
                          "nonfinite": [False] * (len(steps) - 1)})
    trial = {"trial_id": tid, "workload": workload, "weight_decay": wd, "status": status, "steps": last,
             "config": json.dumps({"monitor": {"window": 10}})}
    return TrialRecord(trial, TrialSettings.parse(trial["config"], AnalysisConfig()), feats, evals)


SWEEP = [
    run("P1", 1.0, 300, {1500: 0.5, 2000: 0.97}, 3000),            # grok 2000; alarm 1500: lead 500
    run("P2", 1.0, 200, {900: 0.4, 1000: 0.97}, 2000, "mod_sub"),   # grok 1000; alarm 900: lead 100
    run("P3", 1.0, 200, {1200: 0.97}, 2200),                        # alarm at the grok step: late
    run("N1", 1.0, 300, {3000: 0.35, 3100: 0.02}, 6000),            # false alarm at 3000; hard
    run("N2", 0.0, 300, {3000: 0.1}, 6000, "mod_sub"),              # quiet; wd 0: not hard
    run("N3", 0.5, 300, {1000: 0.05}, 3000),                        # quiet; too short to be hard
    run("I1", 1.0, 300, {1200: 0.97}, 2000, at_fit=0.5),            # immediate: excluded
    run("R1", 1.0, 300, {}, 1000, status="running"),                # still running: excluded
    run("L1", 1.0, 300, {2800: 0.97}, 3000),                        # grokked 200 steps before its end
]


def test_labels_by_hand():
    runs = {r.trial_id: r for r in label_runs(SWEEP)}
    assert [runs[t].label for t in ("P1", "P2", "P3")] == ["positive"] * 3
    assert [runs[t].label for t in ("N1", "N2", "N3")] == ["negative"] * 3
    assert runs["I1"].label == runs["R1"].label == runs["L1"].label == "excluded"
    assert runs["I1"].outcome == "immediate" and runs["L1"].outcome == "grokked"  # L1: not followed 1,000 steps
    # longest positive grok: 2000 → hard needs wd > 0 and ≥ 6,000 steps observed
    assert [t for t, r in runs.items() if r.hard] == ["N1"]


def test_test_accuracy_baseline_by_hand():
    res = evaluate(label_runs(SWEEP), "test_accuracy", {"level": 0.3}, DetectionConfig(delta=2000, boot=200))
    assert (res.n_positive, res.n_negative, res.n_hard, res.n_excluded) == (3, 3, 1, 3)
    assert (res.hits.k, res.hits.n, res.late, res.misses) == (2, 3, 1, 0)
    assert (res.false_alarms.k, res.false_alarms.n, res.hard_false_alarms.k, res.hard_false_alarms.n) == (1, 3, 1, 1)
    assert (res.lead_median, res.lead_fraction_median) == (300.0, pytest.approx(0.175))  # 500, 100 / .25, .1
    # alarmed: P1, P2, P3, N1; grokked within 2000 steps after the alarm: P1, P2
    assert (res.p_grok_within_delta.k, res.p_grok_within_delta.n) == (2, 4)
    # scores before grok: P1 0.5, P2 0.4, P3 0.02; negatives at the end: 0.35, 0.1, 0.05
    # pairs won: P1 3, P2 3, P3 0 → 6/9
    assert res.auroc == pytest.approx(6 / 9)
    assert res.auroc_lo <= res.auroc <= res.auroc_hi
    by = {a.trial_id: a for a in res.alarms}
    assert (by["P1"].alarm_step, by["P1"].outcome, by["P3"].outcome, by["N1"].outcome) == (1500, "hit", "late", "false_alarm")


def test_weight_decay_baseline_alarms_at_the_start_of_every_weight_decay_run():
    res = evaluate(label_runs(SWEEP), "weight_decay", {}, DetectionConfig(boot=0))
    assert (res.hits.k, res.false_alarms.k, res.hard_false_alarms.k) == (3, 2, 1)  # N1, N3 alarm
    assert res.lead_median == 1200.0  # leads 2000 (P1), 1000 (P2), 1200 (P3): alarms at step 0


def test_auroc_by_hand():
    assert auroc([3, 2], [1, 2]) == pytest.approx(3.5 / 4)  # 3 wins, one tie
    assert auroc([-math.inf], [1.0]) == 0.0
    # no score (NaN) and a detector that saw nothing (−inf) rank alike: a tie, either way round
    assert auroc([-math.inf], [math.nan]) == 0.5 and auroc([math.nan], [-math.inf]) == 0.5
    assert auroc([math.nan, 1.0], [-math.inf, 0.0]) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert math.isnan(auroc([], [1.0]))


def test_cross_validation_tunes_on_the_other_groups():
    runs = label_runs(SWEEP)
    res = cross_validate(runs, "test_accuracy", {}, DetectionConfig(group="workload", boot=0))
    assert [g for g, _ in res.folds] == ["mod_add", "mod_sub"]
    assert (res.n_positive, res.n_negative) == (3, 3)  # every run scored once, in its held-out fold
    # Fold "mod_sub" is tuned on mod_add (P1, P3; N1, N3): P3 is late at every level; levels
    # 0.1–0.3 hit P1 and alarm on N1 (0.35): J = 1/2 − 1/2 = 0; 0.5 hits P1 and spares N1:
    # J = 1/2; 0.7 reaches P1 only at its grok step (late): J = 0. So 0.5 — and P2 (0.4 at 900,
    # 0.97 at 1000) is then late in its held-out fold.
    assert res.folds[1][1] == {"level": 0.5}
    held = {a.trial_id: a for a in res.alarms}
    assert held["P2"].outcome == "late" and held["P2"].alarm_step == 1000
    # Fold "mod_add" is tuned on mod_sub (P2; N2 peaks at 0.1): 0.2 and 0.3 both give J = 1;
    # the first in grid order wins.
    assert res.folds[0][1] == {"level": 0.2}


def test_cross_validation_reports_only_the_parameters_no_fold_tunes():
    """A given value of a tuned key is replaced in every fold (the folds say by what): the
    pooled result must not carry it as if it had been scored (`detect --config` showed the
    given level beside the cross-validated counts of other levels)."""
    runs = label_runs(SWEEP)
    res = cross_validate(runs, "test_accuracy", {"level": 0.9}, DetectionConfig(group="workload", boot=0))
    assert [p for _, p in res.folds] == [{"level": 0.2}, {"level": 0.5}] and res.params == {}
    assert evaluate(runs, "test_accuracy", {"level": 0.9}, DetectionConfig(boot=0)).params == {"level": 0.9}
    # a key no fold tunes is kept, in the result and in every fold's choice
    res = cross_validate(runs, "g23_collapse", {"decline_factor": 10.0, "warmup_windows": 2},
                         DetectionConfig(group="workload", boot=0))
    assert res.params == {"warmup_windows": 2}
    assert all(p["warmup_windows"] == 2 and set(p) == {"warmup_windows", "decline_factor", "persistence",
                                                      "max_rel_std"} for _, p in res.folds), res.folds


def test_cross_validating_the_whole_selection_chooses_among_the_families_in_each_fold():
    """The selection rule (best J, then lead fraction, then the order given) applied per fold
    across two families, by hand. Fold "mod_add" is tuned on mod_sub (P2, wd 1; N2, wd 0): the
    weight-decay indicator (above 0) has J = 1 with P2 alarmed at step 0 (lead fraction 1.0),
    test accuracy ≥ 0.2 also J = 1 but lead 100/1000 — the indicator wins. Fold "mod_sub" is
    tuned on mod_add, where every run has weight decay (J = 0 at every threshold) and test
    accuracy ≥ 0.5 has J = 1/2. Held out: P1, P3 hit and N1, N3 false-alarm under the indicator;
    P2 is late (0.97 at its grok step) and N2 quiet under test accuracy ≥ 0.5."""
    runs = label_runs(SWEEP)
    cfg = DetectionConfig(group="workload", boot=0)
    res = cross_validate_selection(runs, ["weight_decay", "test_accuracy"], cfg)
    assert res.folds == [["mod_add", "weight_decay", {"above": 0.0}], ["mod_sub", "test_accuracy", {"level": 0.5}]]
    assert res.detector == "weight_decay|test_accuracy" and res.params == {}
    assert math.isnan(res.auroc)  # two detectors' scores: no one ranking to pool
    assert (res.hits.k, res.hits.n, res.late, res.false_alarms.k, res.false_alarms.n) == (2, 3, 1, 2, 3)
    held = {a.trial_id: a.outcome for a in res.alarms}
    assert held == {"P1": "hit", "P3": "hit", "N1": "false_alarm", "N3": "false_alarm", "P2": "late", "N2": "quiet",
                    **{t: held[t] for t in ("I1", "R1", "L1") if t in held}}
    # One family alone is that family's cross-validation, under its own name.
    alone = cross_validate_selection(runs, ["test_accuracy"], cfg)
    family = cross_validate(runs, "test_accuracy", {}, cfg)
    assert alone.detector == "test_accuracy" and [f[2] for f in alone.folds] == [p for _, p in family.folds]
    def without_folds(res):  # repr: the AUROC interval is NaN without bootstrap, and NaN != NaN
        return repr({k: v for k, v in res.row().items() if k != "folds"})
    assert without_folds(alone) == without_folds(family)


def memorising_run(tid, wd, memo, grok, last, g23):
    """Evals every 100 steps to ``last``: train accuracy 1.0 from ``memo`` on (0.5 before), test
    accuracy 0.97 from ``grok`` on (0.02 before; ``grok`` None: never); a full window (W = 10)
    every 100 steps from 100, g23 from the {step: value} map, piecewise constant."""
    steps = list(range(0, last + 1, 100))
    evals = pl.DataFrame({"step": steps, "memo_acc": [1.0 if s >= memo else 0.5 for s in steps],
                          "grok_acc": [0.97 if grok is not None and s >= grok else 0.02 for s in steps],
                          "test_loss": [0.5] * len(steps)})
    values, cur = [], None
    for s in steps[1:]:
        cur = g23.get(s, cur)
        values.append(cur)
    n = len(values)
    feats = pl.DataFrame({"step": steps[1:], "window": [10] * n, "g23": values, "gap_ratio": [2.0] * n,
                          "nonfinite": [False] * n})
    trial = {"trial_id": tid, "workload": "mod_add", "weight_decay": wd, "status": "completed", "steps": last,
             "config": json.dumps({"monitor": {"window": 10}})}
    return TrialRecord(trial, TrialSettings.parse(trial["config"], AnalysisConfig()), feats, evals)


def test_the_papers_criterion_over_a_comparable_span_by_hand():
    """DESIGN 1.3's controls' statistic. Delays of the positives: PA 2000 − 300, PB 1000 − 200 →
    median 1,250, so a negative that memorised at 300 is judged at T = 1,550."""
    from edgesweep.platform.report import criterion_rows

    runs = label_runs([
        # peak 8 (steps 400–900) before T = 2000, 6 at memorisation (300), 2 at T: 4× and 3×
        memorising_run("PA", 1.0, 300, 2000, 3000, {100: 4.0, 300: 6.0, 400: 8.0, 1000: 3.0, 2000: 2.0}),
        memorising_run("PB", 1.0, 200, 1000, 2000, {100: 1.0}),                  # flat: 1× and 1×
        # peak 5 (100–200), 2 at memorisation, 1.5 at T = 1550 (the window at 1500): 10/3× and 4/3×
        memorising_run("NA", 1.0, 300, None, 6000, {100: 5.0, 300: 2.0, 1500: 1.5}),
        memorising_run("NB", 0.0, 300, None, 6000, {100: 1.0}),                  # flat
        memorising_run("NC", 0.0, 300, None, 1000, {100: 9.0, 500: 1.0}),        # ends before T: not observed
    ])
    got = {c["trial_id"]: c for c in criterion_over_spans(runs)}
    want = {"PA": (2000, 4.0, 3.0), "PB": (1000, 1.0, 1.0), "NA": (1550, 5 / 1.5, 2 / 1.5), "NB": (1550, 1.0, 1.0)}
    for tid, (t, peak, memo) in want.items():
        c = got[tid]
        assert c["observed"] and c["reference_step"] == t, c
        assert (c["peak_decline"], c["memo_decline"]) == (pytest.approx(peak), pytest.approx(memo)), c
        assert (c["peak_met"], c["memo_met"]) == (peak > 1.5, memo > 1.5), c
    assert got["NC"]["reference_step"] == 1550 and not got["NC"]["observed"]
    assert criterion_rows(list(got.values())) == [["grokked", 2, 1, 1], ["not grokked, weight decay > 0", 1, 1, 0],
                                                  ["not grokked, weight decay 0", 1, 0, 0]]


def test_a_gap_that_closes_to_zero_is_the_largest_decline_everywhere():
    """g23 = σ2² − σ3² reaches 0 when the window's second and third directions coincide (or
    only one direction is left): a complete collapse. The runs table reads peak/0 as +inf
    (events.decline_ratio); the comparable-span criterion and the g23 detectors' scores read it
    the same way — they had left the run undefined (NaN, not met) and the score at its last
    finite value, so a total collapse ranked below a 2× decline."""
    from edgesweep.analysis.detectors import make_detector
    from edgesweep.analysis.runs import run_row

    closes = memorising_run("PZ", 1.0, 300, 2000, 3000, {100: 8.0, 1500: 0.0})
    halves = memorising_run("PH", 1.0, 300, 2000, 3000, {100: 8.0, 1500: 4.0})
    runs = label_runs([closes, halves])
    got = {c["trial_id"]: c for c in criterion_over_spans(runs)}
    assert got["PZ"]["peak_decline"] == math.inf and got["PZ"]["peak_met"]
    assert got["PH"]["peak_decline"] == 2.0 and got["PH"]["peak_met"]
    row = run_row(closes, AnalysisConfig())
    assert row["g23_decline"] == math.inf and row["preceded"]  # the runs table: the same verdict
    for name in ("paper_g23", "g23_collapse"):
        scores = {}
        for rec in (closes, halves):
            det = make_detector(name, {"warmup_windows": 0} if name == "g23_collapse" else {}, window=10)
            for f in rec.features.iter_rows(named=True):
                det.update(feature=f)
            scores[rec.trial_id] = det.score
        assert scores == {"PZ": math.inf, "PH": 2.0}, name
    # the AUROC ranks the closed gap above the halved one
    assert auroc([scores["PZ"]], [scores["PH"]]) == 1.0


def test_cross_validation_needs_two_groups_and_breaks_ties_towards_the_given_parameters():
    runs = label_runs(SWEEP)
    cfg = DetectionConfig(group="workload", boot=0)
    # Fold "mod_add" (tuned on mod_sub) ties at 0.2 and 0.3: the given level wins the tie.
    res = cross_validate(runs, "test_accuracy", {"level": 0.3}, cfg)
    assert [p for _, p in res.folds] == [{"level": 0.3}, {"level": 0.5}]
    one = [r for r in runs if r.record.trial["workload"] == "mod_add"]
    with pytest.raises(ValueError, match=r"leave-one-workload-out needs positive or negative runs of at least "
                                         r"two workload values; got 1 \(mod_add\)"):
        cross_validate(one, "test_accuracy", {}, cfg)
    with pytest.raises(ValueError, match="got 1"):
        cross_validate_selection(one, ["test_accuracy"], cfg)
    # A second group of excluded runs only (R1 still running, moved to mod_sub) tunes nothing either.
    moved = label_runs([run("R1", 1.0, 300, {}, 1000, "mod_sub", status="running")] +
                       [r.record for r in one])
    assert "got 1 (mod_add)" in cross_validation_problem(moved, "workload")
    # Two groups, but holding out mod_add leaves only mod_sub's negative N2 to tune on.
    no_positive = [r for r in runs if r.trial_id != "P2"]
    assert cross_validation_problem(no_positive, "workload") == (
        "leave-one-workload-out: the fold that holds out mod_add would be tuned on the other workload values, "
        "which have no positive (a delayed grok)")
    with pytest.raises(ValueError, match="no positive"):
        cross_validate(no_positive, "test_accuracy", {}, cfg)
    assert cross_validation_problem(runs, "workload") is None
