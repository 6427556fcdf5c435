"""``python -m edgesweep detect ROOT/SWEEP``: the early-warning benchmark of a sweep.

Reads the sweep's records, labels every run (``analysis.detection``), scores the chosen
detector and every baseline — in sample and leave-one-group-out — and writes what it found
next to the tables: the ``detection`` table (one row per detector × evaluation),
``detection.json`` (the labels, outcome counts at test-accuracy thresholds 0.9 / 0.95 / 0.99,
every run's alarm, the paper's criterion over comparable spans) and three figures (ROC curves,
the lead-time distribution, alarm step against grok step). The report shows them.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from dataclasses import asdict

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from ..analysis import AnalysisConfig, read_records
from ..analysis.detection import (POSITIVE, DetectionConfig, DetectorResult, criterion_over_spans,
                                  cross_validate, cross_validation_problem, evaluate, label_runs)
from ..analysis.detectors import BASELINES, DEFAULT_DETECTOR, detector_names
from ..analysis.events import classify_generalisation
from ..analysis.record import FEATURE_COLUMNS, INCOMPLETE, CheckedSweep, column, read_fresh
from ..storage import StorageError, SweepPath, write_table
from ..workloads.catalog import family
from .aggregate import _jsonable
from .report import (CRITERION_HEADER, CRITERION_MISSING, CRITERION_TEXT, DETECTION_HEADER, _png, criterion_rows,
                     detection_rows)

__all__ = ["run_detection", "detect_main", "detection_text"]

THRESHOLDS = (0.9, 0.95, 0.99)
COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e", "#7f7f7f"]


def outcome_counts(records) -> dict[str, dict[str, int]]:
    """How many runs grokked / generalised immediately / were censored / diverged at each
    test-accuracy threshold — so a reader sees how much hangs on the 0.95."""
    out = {}
    for thr in THRESHOLDS:
        c = Counter(classify_generalisation(r.evals["step"].to_numpy(), column(r.evals, "memo_acc"),
                                            column(r.evals, "grok_acc"), thr,
                                            diverged=r.trial.get("status") == "diverged").outcome
                    for r in records if r.trial.get("status") not in ("failed", "unknown"))
        out[f"{thr:g}"] = {k: c.get(k, 0) for k in ("grokked", "immediate", "censored", "diverged")}
    return out


def run_detection(path: str, detector: str = DEFAULT_DETECTOR, params: dict | None = None,
                  cfg: DetectionConfig = DetectionConfig(), write: bool = True) -> dict:
    """Score ``detector`` (with ``params``) and the baselines over the sweep at ``path``."""
    if detector not in detector_names():
        raise StorageError(f"unknown detector {detector!r}; allowed: {', '.join(detector_names())}")
    sp = SweepPath.parse(path)
    sp.check()
    # As aggregate reads: damaged or missing files are named, and their trials are left out
    # (incomplete: excluded from the labels) while the rest is scored from the intact files.
    def read(checked: CheckedSweep) -> list:
        trials = [dict(t, family=family(t["workload"] or "unknown"),
                       **({"status": INCOMPLETE} if t["trial_id"] in checked.damaged else {}))
                  for t in checked.trials.to_dicts()]
        if not trials:
            raise StorageError(f"no trials in the sweep at {sp.uri}", sp.uri)
        return read_records(checked.plans, trials, AnalysisConfig(), FEATURE_COLUMNS)

    checked, records = read_fresh(sp, "detect", read)  # a part compacted away mid-read: read again
    unusable = [r for r in records if r.trial.get("status") == INCOMPLETE or r.incompleteness()]
    if records and len(unusable) == len(records):  # as aggregate: no good detection.json replaced by nothing
        first = unusable[0]
        why = first.incompleteness() or "stored data damaged: " + "; ".join(checked.damaged.get(first.trial_id, [])[:2])
        raise StorageError(f"none of the {len(records)} trial(s) can be analysed (first: {first.trial_id}, {why}); "
                           f"nothing written (`edgesweep verify {shlex.quote(sp.text)}` names every damaged file)",
                           sp.uri)
    runs = label_runs(records, cfg)
    names = [detector] + [b for b in BASELINES if b != detector]
    cv_problem = cross_validation_problem(runs, cfg.group)
    results: list[DetectorResult] = []
    for name in names:
        p = params if name == detector else {}
        results.append(evaluate(runs, name, p, cfg))
        if cv_problem is None:  # else a fold would be "tuned" without a positive or a negative
            results.append(cross_validate(runs, name, p, cfg))
    doc = {
        "cv_problem": cv_problem,
        "sweep": sp.uri, "detector": detector, "params": params or {}, "config": asdict(cfg),
        "outcomes_by_threshold": outcome_counts(records),
        "labels": dict(Counter(r.label for r in runs), hard=sum(r.hard for r in runs)),
        "longest_positive_grok": max((r.grok_step for r in runs if r.label == POSITIVE), default=None),
        "results": [dict(r.row(), alarms=[asdict(a) for a in r.alarms]) for r in results],
        "criterion": criterion_over_spans(runs),
        "runs": [{"trial_id": r.trial_id, "outcome": r.outcome, "label": r.label, "hard": r.hard,
                  "grok_step": r.grok_step, "last_step": r.last_step, "block": r.record.settings.block,
                  "workload": r.record.trial.get("workload"), "weight_decay": r.record.trial.get("weight_decay")}
                 for r in runs],
    }
    if write:
        table = pl.DataFrame([r.row() for r in results])
        write_table(sp.root, sp.sweep, "detection", table)
        sp.write_bytes("detection.json", json.dumps(_jsonable(doc), indent=1, allow_nan=False).encode())
        sp.write_bytes("figures/detection_roc.png", roc_figure(results))
        sp.write_bytes("figures/detection_lead.png", lead_figure(results))
        sp.write_bytes("figures/detection_alarm_vs_grok.png", scatter_figure(results))
    return {"doc": doc, "results": results, "runs": runs}


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _in_sample(results):
    return [r for r in results if r.evaluation == "in-sample"]


def roc_figure(results: list[DetectorResult]) -> bytes:
    """Run-level ROC of each detector's score (in-sample), AUROC in the legend."""
    fig = Figure(figsize=(5.5, 5.0), layout="tight")
    ax = fig.subplots()
    for res, color in zip(_in_sample(results), COLORS):
        pos = np.nan_to_num([a.score for a in res.alarms if a.label == "positive"], nan=-1e300, neginf=-1e300)
        neg = np.nan_to_num([a.score for a in res.alarms if a.label == "negative"], nan=-1e300, neginf=-1e300)
        if not (pos.size and neg.size):
            continue
        cuts = np.unique(np.concatenate([pos, neg, [np.inf]]))[::-1]
        tpr = [np.mean(pos >= c) for c in cuts] + [1.0]
        fpr = [np.mean(neg >= c) for c in cuts] + [1.0]
        ax.plot(fpr, tpr, color=color, lw=1.6, label=f"{res.detector} (AUROC {res.auroc:.2f})")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", ls=":", lw=1)
    ax.set_xlabel("false-positive rate (negatives)")
    ax.set_ylabel("true-positive rate (grokked runs)")
    ax.set_title("run-level ROC of the detectors' scores", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    else:  # no curve: the sweep has no labelled positives, or no negatives
        ax.text(0.5, 0.5, "no ROC: needs grokked runs and negatives", ha="center", va="center",
                transform=ax.transAxes, color="#666666")
    return _png(fig)


def lead_figure(results: list[DetectorResult]) -> bytes:
    """Lead (grok − alarm) as a fraction of the grok step, per detector (hits only)."""
    fig = Figure(figsize=(7, 3.8), layout="tight")
    ax = fig.subplots()
    rows = _in_sample(results)
    data = [[(a.grok_step - a.alarm_step) / a.grok_step for a in r.alarms if a.outcome == "hit"] for r in rows]
    pos = [i for i, d in enumerate(data) if d]
    if pos:
        ax.boxplot([data[i] for i in pos], positions=pos, widths=0.5)
    ax.axhline(0.25, color="#d62728", ls="--", lw=0.8, label="goal: 25 % of the grok step")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r.detector}\n({r.hits.k} hits)" for r in rows], fontsize=7)
    ax.set_ylabel("lead / grok step")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("how early the hits come", fontsize=10)
    return _png(fig)


def scatter_figure(results: list[DetectorResult]) -> bytes:
    """Alarm step against grok step for every alarmed positive; on or above the diagonal = late."""
    fig = Figure(figsize=(5.5, 5.0), layout="tight")
    ax = fig.subplots()
    top, drawn = 1.0, False
    for res, color in zip(_in_sample(results), COLORS):
        pts = [(a.grok_step, a.alarm_step) for a in res.alarms if a.label == "positive" and a.alarm_step is not None]
        if pts:
            g, a = zip(*pts)
            ax.scatter(g, a, s=14, color=color, alpha=0.7, label=res.detector)
            top, drawn = max(top, max(g), max(a)), True
    ax.plot([0, top], [0, top], color="#999999", ls=":", lw=1, label="alarm = grok")
    if not drawn:  # as the ROC says it: an empty plot would look like a drawing failure
        ax.text(0.5, 0.5, "no alarm on a grokked run to show", ha="center", va="center",
                transform=ax.transAxes, color="#666666")
    ax.set_xlabel("grok step")
    ax.set_ylabel("alarm step")
    ax.legend(fontsize=7)
    ax.set_title("alarm step vs grok step (grokked runs)", fontsize=10)
    return _png(fig)


# ------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------


def _aligned(header: list[str], rows: list[list]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def detection_text(doc: dict) -> str:
    """What ``edgesweep detect`` prints: the labels, the detectors beside the baselines, and
    the paper's criterion over a comparable span (DESIGN 1.3: the controls' statistic)."""
    lab, cfg = doc["labels"], doc["config"]
    longest = doc["longest_positive_grok"]
    head = [f"labels: {lab.get('positive', 0)} grokked (delayed), {lab.get('negative', 0)} negatives "
            f"({lab.get('hard', 0)} hard), {lab.get('excluded', 0)} excluded; longest positive grok step "
            f"{'—' if longest is None else longest}; Δ = {cfg['delta']} steps; cv leaves one {cfg['group']} out",
            "outcomes by test-accuracy threshold: " + "; ".join(
                f"{t}: " + ", ".join(f"{n} {k}" for k, n in c.items()) for t, c in doc["outcomes_by_threshold"].items())]
    if doc.get("cv_problem"):
        head.append(f"no cross-validation: {doc['cv_problem']}; the rows below are in-sample only")
    if not lab.get("positive"):
        head.append(f"no positives: hits, leads and AUROC need runs that grokked after a delay and were followed "
                    f"≥ {cfg.get('post_grok', '?')} steps past the grok (docs/DETECTOR.md, labels)")
    table = _aligned(DETECTION_HEADER, detection_rows(doc["results"]))
    if "criterion" not in doc:
        criterion = ["", CRITERION_MISSING]
    elif lab.get("positive"):
        criterion = ["", CRITERION_TEXT, "", *_aligned(CRITERION_HEADER, criterion_rows(doc["criterion"]))]
    else:
        criterion = ["", "the paper's criterion over a comparable span: no positives to measure the span by"]
    return "\n".join(head + ["", *table, *criterion])


def detect_main(path: str, detector: str = DEFAULT_DETECTOR, config: str | None = None,
                cv: str = "workload", delta: int = 2000) -> int:
    try:
        params = json.loads(config) if config is not None else {}  # '' is a mistake, not "no config"
        if not isinstance(params, dict):
            raise ValueError(f"must be a JSON object of detector parameters, got {config!r}")
    except ValueError as exc:
        print(f"edgesweep detect: error: --config: {exc}", file=sys.stderr)
        return 2
    if cv not in ("workload", "family", "block"):
        print(f"edgesweep detect: error: --cv {cv!r}; allowed: workload, family, block", file=sys.stderr)
        return 2
    try:
        out = run_detection(path, detector, params, DetectionConfig(delta=delta, group=cv))
    except (StorageError, ValueError) as exc:
        print(f"edgesweep detect: error: {exc}", file=sys.stderr)
        return 2
    print(detection_text(out["doc"]))
    print(f"\nwritten: {SweepPath.parse(path).uri}/detection, detection.json, figures/detection_*.png")
    return 0
