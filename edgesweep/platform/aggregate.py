"""The aggregation job: fan the analysis out over trials on Ray, then write its tables.

What runs where: the driver scans the sweep's tables once (``storage.scan``, which lists and
validates every file) and reads the ``trials`` table; batches of trials go to Ray tasks, each
of which collects only its own trials' rows from the scan plans (the ``trial_id`` filter is
pushed into the Parquet scan, so the driver never holds the feature table) and returns one
``runs`` row and one :class:`~edgesweep.analysis.TrialRecord` per trial. The driver then
builds ``summary`` and the scorecard (``edgesweep.analysis``) and writes ``runs``, ``summary``,
``scorecard.json`` and the report. All the analysis is in ``edgesweep.analysis``; this module
only distributes it and stores the results.

Everything written is a function of what is stored, so aggregating is idempotent and can run
while the sweep trains: running trials are included and flagged, and their events may change
at the next aggregation (an alarm on a run that has not grokked yet is a false alarm *for now*).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..analysis import AnalysisConfig, read_records, run_row, scorecard, summary_table
from ..analysis.record import CheckedSweep, read_fresh
from ..analysis.runs import error_row, incomplete_row, runs_table
from ..analysis.scorecard import distributions
from ..storage import StorageError, StorageWarning, SweepPath, scan, write_table
from ..workloads.catalog import family

__all__ = ["AggregateConfig", "analyse_batch", "aggregate_sweep", "aggregate_main"]

#: Why batches are no smaller: a task's read is a filter on the driver's scan plan, which names
#: every file of the table, so each task opens every footer (≈ 0.5 s per 1,000 files here)
#: whatever its batch size (benchmarks/aggregate.md). One task per CPU, at least this many trials.
MIN_TRIALS_PER_TASK = 16


@dataclass(frozen=True)
class AggregateConfig:
    """analysis: what is computed (stored with the outputs). trials_per_task: batch size of a
    Ray task (None: one task per CPU of the cluster). scorecard: compute ``scorecard.json``
    (needs every run's feature columns in the driver; off for a quick count of a huge sweep)."""

    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    trials_per_task: int | None = None
    scorecard: bool = True


def analyse_batch(plans: dict[str, pl.LazyFrame], trials: list[dict], cfg: AnalysisConfig,
                  keep_records: bool) -> list[tuple[dict, Any]]:
    """(runs row, record or None) per trial of one batch; a trial whose analysis raises keeps
    its identity and the error (``error`` column) and is left out of every count."""
    try:
        records = read_records(plans, trials, cfg)
    except Exception as exc:  # noqa: BLE001 — one unreadable batch must not sink the sweep
        return [(error_row(t, cfg, exc), None) for t in trials]
    out = []
    for rec in records:
        try:
            out.append((run_row(rec, cfg), rec if keep_records else None))
        except Exception as exc:  # noqa: BLE001
            out.append((error_row(rec.trial, cfg, exc), None))
    return out


def _vanished(row: dict) -> bool:
    return bool(row["error"]) and row["error"].startswith("FileNotFoundError:")


def _run_batches(plans, trials: list[dict], cfg: AggregateConfig, use_ray: bool) -> list[tuple[dict, Any]]:
    if not use_ray:
        return analyse_batch(plans, trials, cfg.analysis, cfg.scorecard)
    import ray

    started = False
    if not ray.is_initialized():
        # A Ray job's driver has RAY_ADDRESS set; elsewhere a private local cluster ("local"
        # never attaches to a stale one recorded in /tmp/ray).
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 log_to_driver=False)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = cfg.trials_per_task or max(MIN_TRIALS_PER_TASK, math.ceil(len(trials) / max(1, cpus)))
        task = ray.remote(num_cpus=1)(analyse_batch)
        plans_ref = ray.put(plans)
        refs = [task.remote(plans_ref, trials[i:i + size], cfg.analysis, cfg.scorecard)
                for i in range(0, len(trials), size)]
        return [x for part in ray.get(refs) for x in part]
    finally:
        if started:
            ray.shutdown()


def _jsonable(x: Any) -> Any:
    """Plain JSON: NaN → null, ±inf → "inf"/"-inf" (strict JSON has neither), numpy → Python."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def aggregate_sweep(path: str | os.PathLike, use_ray: bool = True, report: bool = True,
                    config: AggregateConfig | None = None) -> str:
    """Aggregate the sweep at ``path`` (ROOT/SWEEP, local or s3://); returns that folder's URI.

    Writes ``runs`` and ``summary`` (atomic replace), ``scorecard.json`` ({"analysis_config",
    "predictions"}) when ``config.scorecard``, then ``report.md`` + figures when ``report``.
    StorageError naming the path when there is no sweep or no trial there.
    """
    cfg = config if config is not None else AggregateConfig()
    sp = SweepPath.parse(path)
    sp.check()
    # Damaged or missing files are found by the seal records first and named; those trials are
    # marked incomplete and everything else aggregates from the files that are intact.
    def read(checked: CheckedSweep) -> tuple[list[dict], list[tuple[dict, Any]]]:
        if checked.trials.height == 0:
            raise StorageError(f"no trials in the sweep at {sp.uri}: nothing to aggregate yet", sp.uri)
        rows = [dict(t, family=family(t["workload"] or "unknown")) for t in checked.trials.to_dicts()]
        return rows, _run_batches(checked.plans, [t for t in rows if t["trial_id"] not in checked.damaged],
                                  cfg, use_ray)

    # A batch records a vanished file as its trials' error (a Ray task cannot raise it here).
    checked, (rows, results) = read_fresh(sp, "aggregate", read,
                                          vanished=lambda got: any(_vanished(row) for row, _ in got[1]))
    damaged = checked.damaged
    results += [(incomplete_row(t, cfg.analysis, "stored data damaged: " + "; ".join(damaged[t["trial_id"]][:3])), None)
                for t in rows if t["trial_id"] in damaged]

    for row, _ in results:
        if row["error"] and row["status"] != "incomplete":  # damage: warned file by file above
            warnings.warn(f"aggregate: trial {row['trial_id']}: {row['error']}", RuntimeWarning, stacklevel=2)
    runs = runs_table([row for row, _ in results])
    if (why := _nothing_usable(runs)) is not None:
        raise StorageError(f"{why}; nothing written (runs, summary, scorecard.json and the report of an earlier "
                           f"aggregation, if any, are kept; `edgesweep verify {shlex.quote(sp.text)}` names every "
                           "damaged file)", sp.uri)
    summary = summary_table(runs, cfg.analysis)
    # Everything is computed before anything is written: a failure in the scorecard must not
    # leave new runs/summary beside an old scorecard.json (the report would mix the two).
    scorecard_json = None
    if cfg.scorecard:
        records = [rec for _, rec in results if rec is not None]
        doc = {"analysis_config": asdict(cfg.analysis),
               "predictions": [p.as_dict() for p in scorecard(records, runs, summary)],
               "distributions": distributions(records, runs)}
        scorecard_json = json.dumps(_jsonable(doc), indent=2, allow_nan=False).encode()
    write_table(sp.root, sp.sweep, "runs", runs)
    write_table(sp.root, sp.sweep, "summary", summary)
    if scorecard_json is not None:
        sp.write_bytes("scorecard.json", scorecard_json)
    if report:
        from .report import write_report
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StorageWarning)  # the damage is reported above already
            write_report(sp.text)
    return sp.uri


def _nothing_usable(runs: pl.DataFrame) -> str | None:
    """Why no trial of the sweep can be analysed — every one's stored data damaged or missing
    (incomplete) or failing its analysis — or None. Writing that out would replace a good
    aggregation with empty tables (a deleted table folder did). A trial that failed in training
    is an outcome, and aggregates; so are rows without a trials row in a folder the driver did
    not write (status unknown: aggregate says what they are)."""
    bad = runs.filter((pl.col("status") == "incomplete")
                      | (pl.col("error").is_not_null() & ~pl.col("status").is_in(["failed", "unknown"])))
    if runs.height == 0 or bad.height < runs.height:
        return None
    first = bad.row(0, named=True)
    return (f"none of the {runs.height} trial(s) can be analysed (first: {first['trial_id']}, "
            f"{first['status']}: {first['error']})")


def aggregate_main(path: str, use_ray: bool = True, report: bool = True) -> int:
    """``edgesweep aggregate ROOT/SWEEP``: aggregate, print the precedence table, say where the
    outputs went. 0 on success, 2 with one message (no traceback) when there is no sweep."""
    from .report import delayed_sentence, precedence_sentence, precedence_text

    try:
        t0 = time.perf_counter()
        uri = aggregate_sweep(path, use_ray=use_ray, report=report)
        summary = scan(uri, "summary").collect()
        runs = scan(uri, "runs").collect()
    except StorageError as exc:
        print(f"edgesweep aggregate: error: {exc}", file=sys.stderr)
        return 2
    n_running = int(runs["running"].fill_null(False).sum())
    print(precedence_text(summary))
    print()
    print(precedence_sentence(summary, n_running))
    if delayed := delayed_sentence(runs):
        print(delayed)
    n_inc = runs.filter(pl.col("status") == "incomplete").height
    n_err = runs.filter(pl.col("error").is_not_null()).height - n_inc
    if n_inc:
        print(f"{n_inc} trial(s) incomplete (stored data damaged or missing; left out of the counts): "
              f"{', '.join(runs.filter(pl.col('status') == 'incomplete')['trial_id'].to_list()[:10])}; "
              f"`edgesweep verify {shlex.quote(path)}` names every file")
    if n_err:
        print(f"{n_err} trial(s) could not be evaluated; see the 'error' column of runs")
    unknown = runs.filter(pl.col("status") == "unknown")
    if unknown.height:  # in a sweep the driver ran, verify calls these damaged (incomplete)
        print(f"{unknown.height} trial(s) have stored rows but no trials row (status unknown; left out of the "
              f"counts): {', '.join(unknown['trial_id'].to_list()[:10])}; the trials row is where edgesweep's "
              "driver records how a trial ended, and this folder shows no sign of that driver")
    interrupted = runs.filter(pl.col("status") == "interrupted")
    if interrupted.height:
        print(f"{interrupted.height} trial(s) interrupted (their worker or driver is gone; their rows "
              f"stop there and `edgesweep run SPEC --resume` continues them): "
              f"{', '.join(interrupted['trial_id'].to_list()[:10])} — {interrupted['status_note'][0]}")
    print(f"\naggregated {runs.height} trials in {time.perf_counter() - t0:.1f}s → {uri}/runs, "
          f"{uri}/summary, {uri}/scorecard.json" + (f", {uri}/report.md" if report else ""))
    return 0
