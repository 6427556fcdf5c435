"""Choose a detector on the development corpus — the selection behind detectors/*.json.

    .venv/bin/python benchmarks/detector_selection.py ROOT/grokking-corpus [--group workload] [--top 15]

The rule, fixed before the corpus was looked at (docs/DETECTOR.md):

1. every configuration of each searched family's grid (``DETECTORS[name].grid``: the spectral
   trend family and the old g23-collapse rule) is replayed over every labelled corpus run;
2. the chosen configuration is the one with the largest in-sample Youden J (hit rate −
   false-alarm rate; a hit is an alarm strictly before the grok step); ties go to the larger
   median lead fraction, then to the grid's order;
3. what that choice is worth is estimated by leave-one-``group``-out cross-validation of the
   *whole selection* (in each fold, rule 2 over every family's grid on the other groups; score
   the held-out group; pool: ``detection.cross_validate_selection``), printed beside, with the
   baselines. Its row is named after the families the folds chose. (Until 2026-12-07 each
   family was cross-validated on its own instead; on the corpus rerun every fold chose
   spectral_trend either way, so its row is unchanged, and the g23_collapse family's row — the
   same call as the g23_collapse baseline's — is no longer printed twice.)

Nothing here looks at the evaluation sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edgesweep.analysis import AnalysisConfig, read_records, read_trials
from edgesweep.analysis.detection import (DetectionConfig, criterion_over_spans, cross_validate,
                                          cross_validate_selection, label_runs, run_alarm, score_alarms)
from edgesweep.analysis.detectors import BASELINES, DETECTORS
from edgesweep.analysis.record import FEATURE_COLUMNS
from edgesweep.platform.detect import detection_text, outcome_counts
from edgesweep.platform.report import detection_rows
from edgesweep.storage import SweepPath, scan
from edgesweep.workloads.catalog import family

FAMILIES = ("spectral_trend", "g23_collapse")


def load(path: str):
    sp = SweepPath.parse(path)
    plans = {t: scan(sp.uri, t) for t in ("features", "evals")}
    trials = [dict(t, family=family(t["workload"] or "unknown")) for t in read_trials(sp).to_dicts()]
    return read_records(plans, trials, AnalysisConfig(), FEATURE_COLUMNS)


def j_of(res) -> float:
    return (res.hits.rate if res.hits.n else 0.0) - (res.false_alarms.rate if res.false_alarms.n else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("--group", default="workload")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", help="write the ranking and the choice here")
    args = ap.parse_args()
    cfg = DetectionConfig(group=args.group, boot=1000)
    t0 = time.perf_counter()
    records = load(args.sweep)
    runs = label_runs(records, cfg)
    print(f"{len(records)} runs: " + ", ".join(f"{k} {v}" for k, v in outcome_counts(records)["0.95"].items()))
    labels = {k: sum(r.label == k for r in runs) for k in ("positive", "negative", "excluded")}
    print(f"labels: {labels}, hard negatives {sum(r.hard for r in runs)}; "
          f"longest positive grok {max((r.grok_step for r in runs if r.label == 'positive'), default=None)}")

    ranking = []
    for name in FAMILIES:
        grid = DETECTORS[name].grid
        keys = sorted(grid)
        import itertools
        for vals in itertools.product(*(grid[k] for k in keys)):
            params = dict(zip(keys, vals))
            res = score_alarms([run_alarm(r, name, params) for r in runs], name, params, "in-sample",
                               DetectionConfig(**{**cfg.__dict__, "boot": 0}))
            lead = res.lead_fraction_median if res.lead_fraction_median == res.lead_fraction_median else -1.0
            ranking.append((round(j_of(res), 12), lead, name, params, res))
    ranking.sort(key=lambda t: (-t[0], -t[1]))
    print(f"\n{len(ranking)} configurations replayed in {time.perf_counter() - t0:.0f}s; top {args.top} by in-sample J:")
    print(f"{'J':>6} {'hits':>7} {'FA':>7} {'hardFA':>7} {'lead/grok':>9}  detector  params")
    for j, lead, name, params, res in ranking[:args.top]:
        print(f"{j:6.3f} {res.hits.k:>3}/{res.hits.n:<3} {res.false_alarms.k:>3}/{res.false_alarms.n:<3} "
              f"{res.hard_false_alarms.k:>3}/{res.hard_false_alarms.n:<3} {lead:9.2f}  {name}  {json.dumps(params, sort_keys=True)}")
    best_j, best_lead, best_name, best_params, _ = ranking[0]
    print(f"\nchosen (in-sample J {best_j:.3f}): {best_name} {json.dumps(best_params, sort_keys=True)}")

    results = []
    from edgesweep.analysis.detection import cross_validation_problem, evaluate
    cv_problem = cross_validation_problem(runs, cfg.group)  # None, or why no fold could be tuned honestly
    results.append(evaluate(runs, best_name, best_params, cfg))
    if cv_problem is None:
        results.append(cross_validate_selection(runs, FAMILIES, cfg))  # the whole selection, cross-validated
    for name in BASELINES:
        results.append(evaluate(runs, name, {}, cfg))
        if cv_problem is None:
            results.append(cross_validate(runs, name, {}, cfg))
    rows = [r.row() for r in results]
    doc = {"labels": dict(labels, hard=sum(r.hard for r in runs)), "config": cfg.__dict__, "results": rows,
           "longest_positive_grok": max((r.grok_step for r in runs if r.label == "positive"), default=None),
           "outcomes_by_threshold": outcome_counts(records), "criterion": criterion_over_spans(runs),
           "cv_problem": cv_problem}
    print()
    print(detection_text(doc))
    if args.json:
        out = {"chosen": {"detector": best_name, "params": best_params, "in_sample_j": best_j},
               "ranking": [{"j": j, "lead_fraction": lead, "detector": n, "params": p,
                            "hits": [r.hits.k, r.hits.n], "false_alarms": [r.false_alarms.k, r.false_alarms.n]}
                           for j, lead, n, p, r in ranking],
               "table": detection_rows(rows), "labels": doc["labels"]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
