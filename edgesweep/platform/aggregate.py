"""Sweep aggregation: per-trial events → ``runs``, per-arm statistics → ``summary``, scorecard.

What runs where:

* :func:`trial_events` — pure, one trial: grok and memorisation steps from its evaluations,
  the paper's retrospective g23-precedence criterion and the prospective detector's alarm from
  its feature windows (DESIGN.md 1.3). One ``runs`` row.
* :func:`aggregate_sweep` — the job: reads the ``trials`` table, splits the trials into
  batches, computes every batch's events in a Ray task (or in this process), then builds
  ``runs`` and ``summary`` with Polars and writes them, ``scorecard.json`` and the report.
* :func:`summary_table` — pure: counts per (scope, weight-decay arm) with exact intervals and
  between-arm Fisher tests.

Why batches read their own rows: the driver lists the files once (``storage.scan``, which
also validates them) and ships the resulting *query plan* — a Polars LazyFrame, a few KB —
to every task; each task adds ``trial_id ∈ batch`` and collects. The filter is pushed below
the attempt dedupe into the Parquet scan, where row-group statistics on ``trial_id`` skip the
other trials' data (compacted files hold one trial each). So the driver never holds the
feature table, and a cluster reads a thousand trials in parallel. The price: the plan names
every file, so every task opens every footer; hence one task per CPU, not many small ones
(measured in benchmarks/aggregate.md).

Everything written is a function of what is stored, so aggregating is idempotent and can run
while the sweep is still training: trials whose status is ``running`` are included, flagged
(``running``), and their events may change at the next aggregation (a grok may come later;
an alarm on a not-yet-grokked run counts as a false alarm *for now*).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..spectral.detector import DetectorConfig, classify_run, compare_arms, evaluate_detector, first_alarm
from ..spectral.events import (GROK_THRESHOLD, MEMORIZATION_THRESHOLD, PRECEDENCE_RATIO, g23_precedence,
                               grok_step as _grok_step, memorization_step as _memo_step)
from ..spectral.scorecard import RunData, scorecard
from ..spectral.stats import fisher_exact_2x2, mode_int, proportion
from ..storage import StorageError, scan, write_table
from ..storage.fs import Root, resolve_root
from ..storage.layout import check_name, is_hidden, parse_part_name, parse_partition_dirs
from ..storage.schema import PARTITION_KEYS

__all__ = [
    "AggregateConfig",
    "SweepPath",
    "family_of",
    "trial_events",
    "run_data",
    "summary_table",
    "aggregate_sweep",
    "aggregate_main",
    "RUNS_SCHEMA",
    "SUMMARY_SCHEMA",
]


@dataclass(frozen=True)
class AggregateConfig:
    """How a sweep is aggregated.

    grok_threshold / memo_threshold: used for trials whose stored config has no
    ``stop.grok_threshold`` / ``stop.memo_threshold`` (the trainer's own thresholds win, so
    the aggregate agrees with the grok step the trial itself reported).
    precedence_ratio: the paper's 1.5. detector: the causal rule's parameters (fixed in
    advance; see ``spectral/detector.py``). conf: coverage of the exact intervals.
    trials_per_task: batch size of a Ray task; None: one task per CPU of the cluster (see
    :func:`_trials_per_task`).
    scorecard: compute ``scorecard.json`` (needs every run's full feature columns in the
    driver; turn off for a quick count over a huge sweep).
    """

    grok_threshold: float = GROK_THRESHOLD
    memo_threshold: float = MEMORIZATION_THRESHOLD
    precedence_ratio: float = PRECEDENCE_RATIO
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    conf: float = 0.95
    trials_per_task: int | None = None
    scorecard: bool = True


# ------------------------------------------------------------------------------------------
# Paths: ROOT/SWEEP, local or s3://
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPath:
    """One sweep folder: ``root`` (its parent, where ``write_table`` writes) and ``sweep``."""

    text: str          # as the user gave it
    root: Root         # the parent folder (a storage root)
    sweep: str

    @classmethod
    def parse(cls, path: str | os.PathLike) -> "SweepPath":
        text = os.fspath(path)
        folder = resolve_root(text)
        base = folder.base.rstrip("/")
        parent, _, sweep = base.rpartition("/")
        if not sweep or (folder.is_s3 and not parent):
            raise StorageError(f"{text}: expected a sweep folder ROOT/SWEEP "
                               f"(e.g. results/grokking or s3://bucket/prefix/grokking)", text)
        try:
            check_name("sweep", sweep)
        except ValueError as exc:
            raise StorageError(f"{text}: {exc}", text) from None
        parent = parent or "/"
        root = dataclasses.replace(folder, base=parent, text=f"s3://{parent}" if folder.is_s3 else parent,
                                   _made_dirs=set())
        return cls(text, root, sweep)

    @property
    def dir(self) -> str:
        """The sweep folder as the root's filesystem spells it."""
        return self.root.path(self.sweep)

    @property
    def uri(self) -> str:
        """The sweep folder as ``scan`` / Polars take it (local path or s3://…)."""
        return self.root.uri(self.dir)

    def file(self, *parts: str) -> str:
        return self.root.path(self.sweep, *parts)

    def check(self) -> None:
        """StorageError naming the path unless this is a sweep folder with some table in it."""
        from pyarrow import fs as pafs

        info = self.root.info(self.dir)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"no sweep at {self.uri}: the folder does not exist", self.uri)
        if info.type != pafs.FileType.Directory:
            raise StorageError(f"no sweep at {self.uri}: not a folder", self.uri)
        children = set(self.root.list_dirs(self.dir))
        if not children & {"trials", "features", "evals"}:
            hint = ""
            if any((c for c in children if not is_hidden(c))):
                hint = (f" (it holds {', '.join(sorted(c for c in children if not is_hidden(c))[:5])}: "
                        f"if this is a storage root, pass ROOT/SWEEP)")
            raise StorageError(f"no sweep at {self.uri}: no trials/, features/ or evals/ table in it{hint}",
                               self.uri)

    # -- small whole files next to the tables (scorecard.json, report.md, figures) ----------
    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write ``<sweep>/<relpath>`` whole and atomically (a reader never sees a half-written
        report): temp file + fsync + rename locally, one object on S3."""
        return self.root.uri(self.root.write_bytes(self.file(relpath), data))

    def read_bytes(self, relpath: str) -> bytes | None:
        """``<sweep>/<relpath>`` or None when it does not exist."""
        from pyarrow import fs as pafs

        path = self.file(relpath)
        if self.root.info(path).type == pafs.FileType.NotFound:
            return None
        with self.root.fs.open_input_stream(path) as f:
            return f.read()


# ------------------------------------------------------------------------------------------
# One trial
# ------------------------------------------------------------------------------------------

FAMILIES = (("mod_", "modular"), ("multitask_", "multitask"), ("dyck", "dyck"), ("scan", "scan"),
            ("tinystories", "lm"), ("gpt2", "lm"))

#: Columns a batch reads. sigma/alpha only feed the scorecard; bbp/adiabatic too.
FEATURE_COLUMNS = ["trial_id", "step", "window", "k_star", "k_star_weighted", "gap_ratio", "gap",
                   "g23", "nonfinite"]
SCORECARD_FEATURE_COLUMNS = ["sigma", "alpha", "adiabatic", "bbp_ratio"]
EVAL_COLUMNS = ["trial_id", "step", "grok_acc", "memo_acc", "test_loss"]

RUNNING = "running"
MIN_TRIALS_PER_TASK = 16

RUNS_SCHEMA: dict[str, pl.DataType] = {
    "trial_id": pl.String, "sweep": pl.String, "workload": pl.String, "family": pl.String,
    "optimizer": pl.String, "weight_decay": pl.Float64, "seed": pl.Int64, "status": pl.String,
    "running": pl.Boolean, "steps": pl.Int64, "n_windows": pl.Int64, "n_full_windows": pl.Int64,
    "n_nonfinite": pl.Int64, "n_evals": pl.Int64, "grok_threshold": pl.Float64,
    "memo_threshold": pl.Float64, "grok_step": pl.Int64, "memorization_step": pl.Int64,
    "g23_early": pl.Float64, "g23_grok": pl.Float64, "g23_decline": pl.Float64,
    "preceded": pl.Boolean, "monotone": pl.Boolean, "g23_peak": pl.Float64, "g23_final": pl.Float64,
    "decline_peak_to_final": pl.Float64, "alarm_step": pl.Int64, "lead_steps": pl.Int64,
    "detector_outcome": pl.String, "k_star_mode": pl.Int64, "k_star_weighted_mode": pl.Int64,
    "gap_ratio_pre_grok": pl.Float64, "error": pl.String,
}


def family_of(workload: str | None) -> str:
    """Workload family for the per-family summary: mod_* → modular, multitask_* → multitask,
    dyck, scan, tinystories/gpt2 → lm; anything else is its own family."""
    w = workload or "unknown"
    for prefix, fam in FAMILIES:
        if w.startswith(prefix):
            return fam
    return w


def _trial_settings(trial: dict, cfg: AggregateConfig) -> tuple[float, float, int | None]:
    """(grok threshold, memo threshold, monitor window W) from the trial's resolved config JSON,
    falling back to ``cfg`` (and W to None = "largest window seen")."""
    grok_thr, memo_thr, window = cfg.grok_threshold, cfg.memo_threshold, None
    text = trial.get("config")
    try:
        conf = json.loads(text) if text else {}
    except (TypeError, ValueError):
        conf = {}
    if isinstance(conf, dict):
        stop = conf.get("stop") if isinstance(conf.get("stop"), dict) else {}
        mon = conf.get("monitor") if isinstance(conf.get("monitor"), dict) else {}
        grok_thr = _number(stop.get("grok_threshold"), grok_thr)
        memo_thr = _number(stop.get("memo_threshold"), memo_thr)
        w = mon.get("window")
        if isinstance(w, int) and not isinstance(w, bool) and w >= 2:
            window = w
    return grok_thr, memo_thr, window


def _number(x: Any, default: float) -> float:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return default


def _col(df: pl.DataFrame, name: str) -> np.ndarray:
    """Float numpy view of a column (nulls → NaN); all-NaN when the column is absent."""
    if name not in df.columns:
        return np.full(df.height, np.nan)
    return df.get_column(name).cast(pl.Float64).to_numpy().astype(float, copy=False)


def _finite_rows(features: pl.DataFrame) -> pl.DataFrame:
    """Feature rows in step order without the windows the monitor flagged non-finite: their
    numbers come from a diverged update and are not measurements (the trainer's online
    detector skips them too)."""
    f = features.sort("step")
    if "nonfinite" in f.columns:
        f = f.filter(~pl.col("nonfinite").fill_null(False))
    return f


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def trial_events(features: pl.DataFrame, evals: pl.DataFrame, trial: dict,
                 cfg: AggregateConfig | None = None) -> dict:
    """One trial's ``runs`` row (see :data:`RUNS_SCHEMA` for the columns).

    features: that trial's rows of the ``features`` table (any order; needs step, g23,
    gap_ratio, k_star, window; nonfinite optional). evals: its ``evals`` rows (step, grok_acc,
    memo_acc). trial: its ``trials`` row as a dict (trial_id, sweep, workload, optimizer,
    weight_decay, seed, status, steps, config JSON).

    * grok / memorisation step: first eval with grok_acc ≥ ``stop.grok_threshold`` /
      memo_acc ≥ ``stop.memo_threshold`` of the trial's config (else 0.95 / 0.99).
    * precedence: :func:`events.g23_precedence` over the finite-training windows (rows with
      ``nonfinite`` dropped; NaN g23 windows are skipped inside it).
    * alarm: :func:`detector.first_alarm` on the same windows; lead = grok − alarm, outcome
      hit / late / miss / false_alarm / quiet (:func:`detector.classify_run`).
    * k_star_mode: modal k* over *full* windows (window == the config's monitor.window, else
      the largest window seen): a filling window has fewer rows and its spectrum is not
      comparable. gap_ratio_pre_grok: mean of the finite gap ratios of full windows ending
      before the grok step (all full windows for a run that did not grok).
    * steps: the furthest step the trial reached, from its trials row or, while it runs,
      from its data.
    """
    cfg = cfg if cfg is not None else AggregateConfig()
    grok_thr, memo_thr, window = _trial_settings(trial, cfg)
    f = _finite_rows(features)
    n_nonfinite = features.height - f.height
    e = evals.sort("step")

    estep = e.get_column("step").to_numpy() if e.height else np.empty(0, dtype=np.int64)
    gs = _grok_step(estep, _col(e, "grok_acc"), grok_thr)
    ms = _memo_step(estep, _col(e, "memo_acc"), memo_thr)

    fstep = f.get_column("step").to_numpy() if f.height else np.empty(0, dtype=np.int64)
    g23 = _col(f, "g23")
    ratio = _col(f, "gap_ratio")
    prec = g23_precedence(fstep, g23, gs, ratio=cfg.precedence_ratio)
    alarm = first_alarm(fstep, g23, ratio, cfg.detector)
    outcome = classify_run(alarm, gs)

    win = _col(f, "window")
    w_full = window if window is not None else (np.nanmax(win) if np.any(np.isfinite(win)) else None)
    # No window column at all: every window counts as full (nothing to tell them apart).
    full = (win == w_full) if w_full is not None else np.ones(f.height, dtype=bool)
    pre = full & ((fstep < gs) if gs is not None else True)
    r_pre = ratio[pre]
    r_pre = r_pre[np.isfinite(r_pre)]

    observed = [int(a.max()) for a in (fstep, estep) if a.size]
    reported = [int(trial["steps"])] if trial.get("steps") is not None else []
    steps = max(reported + observed, default=None)
    status = trial.get("status")
    return {
        "trial_id": trial["trial_id"],
        "sweep": trial.get("sweep"),
        "workload": trial.get("workload"),
        "family": family_of(trial.get("workload")),
        "optimizer": trial.get("optimizer"),
        "weight_decay": None if trial.get("weight_decay") is None else float(trial["weight_decay"]),
        "seed": _opt_int(trial.get("seed")),
        "status": status,
        "running": status == RUNNING,
        "steps": steps,
        "n_windows": int(f.height),
        "n_full_windows": int(full.sum()),
        "n_nonfinite": int(n_nonfinite),
        "n_evals": int(e.height),
        "grok_threshold": grok_thr,
        "memo_threshold": memo_thr,
        "grok_step": gs,
        "memorization_step": ms,
        "g23_early": prec.g23_early,
        "g23_grok": prec.g23_grok,
        "g23_decline": prec.decline,
        "preceded": prec.preceded,
        "monotone": prec.monotone,
        "g23_peak": prec.g23_peak,
        "g23_final": prec.g23_final,
        "decline_peak_to_final": prec.decline_peak_to_final,
        "alarm_step": outcome.alarm_step,
        "lead_steps": outcome.lead,
        "detector_outcome": outcome.outcome,
        "k_star_mode": mode_int(_col(f, "k_star")[full]),
        "k_star_weighted_mode": mode_int(_col(f, "k_star_weighted")[full]),
        "gap_ratio_pre_grok": float(np.mean(r_pre)) if r_pre.size else math.nan,
        "error": None,
    }


def run_data(features: pl.DataFrame, evals: pl.DataFrame, trial: dict, events: dict) -> RunData:
    """The scorecard's record of one trial, on the same finite-training windows and with the
    same grok / memorisation steps as its ``runs`` row."""
    f = _finite_rows(features)
    e = evals.sort("step")

    def rows(name: str):
        return f.get_column(name).to_list() if name in f.columns else None

    return RunData(
        trial_id=trial["trial_id"], workload=trial.get("workload") or "",
        optimizer=trial.get("optimizer") or "",
        weight_decay=math.nan if trial.get("weight_decay") is None else float(trial["weight_decay"]),
        seed=_opt_int(trial.get("seed")),
        step=f.get_column("step").to_numpy() if f.height else np.empty(0, dtype=np.int64),
        sigma=rows("sigma"), k_star=_col(f, "k_star"), gap_ratio=_col(f, "gap_ratio"),
        gap=_col(f, "gap"), g23=_col(f, "g23"), alpha=rows("alpha"), adiabatic=_col(f, "adiabatic"),
        bbp_ratio=_col(f, "bbp_ratio"),
        eval_step=e.get_column("step").to_numpy() if e.height else np.empty(0, dtype=np.int64),
        test_loss=_col(e, "test_loss"), grok_acc=_col(e, "grok_acc"), memo_acc=_col(e, "memo_acc"),
        grok_step=events["grok_step"], memorization_step=events["memorization_step"],
    )


def _error_row(trial: dict, exc: BaseException) -> dict:
    """A trial whose data cannot be evaluated keeps its row, with the reason, instead of
    taking the aggregation down."""
    row = {k: None for k in RUNS_SCHEMA}
    row.update(trial_id=trial["trial_id"], sweep=trial.get("sweep"), workload=trial.get("workload"),
               family=family_of(trial.get("workload")), optimizer=trial.get("optimizer"),
               weight_decay=trial.get("weight_decay"), seed=_opt_int(trial.get("seed")),
               status=trial.get("status"), running=trial.get("status") == RUNNING,
               error=f"{type(exc).__name__}: {exc}"[:2000])
    return row


# ------------------------------------------------------------------------------------------
# A batch of trials (the unit of parallel work)
# ------------------------------------------------------------------------------------------


def _read_batch(sweep_uri: str, plans: dict[str, pl.LazyFrame] | None, ids: list[str],
                columns: dict[str, list[str]]) -> dict[str, pl.DataFrame]:
    """The batch's rows of features and evals. ``plans`` are the driver's scans; if a file they
    name vanished meanwhile (a live sweep compacts a finished trial's parts), scan afresh."""
    out = {}
    for table, cols in columns.items():
        for attempt in range(2):
            lf = plans[table] if (plans is not None and attempt == 0) else _scan(sweep_uri, table)
            present = [c for c in cols if c in lf.collect_schema().names()]
            try:
                out[table] = lf.filter(pl.col("trial_id").is_in(ids)).select(present).collect()
                break
            except (OSError, pl.exceptions.PolarsError):
                if attempt == 1:
                    raise
    return out


def events_batch(sweep_uri: str, plans: dict[str, pl.LazyFrame] | None, trials: list[dict],
                 cfg: AggregateConfig) -> list[tuple[dict, RunData | None]]:
    """Events (and scorecard records when ``cfg.scorecard``) of a batch of trials.

    Runs in a Ray task or in-process; reads only its own trials' rows."""
    ids = [t["trial_id"] for t in trials]
    fcols = FEATURE_COLUMNS + (SCORECARD_FEATURE_COLUMNS if cfg.scorecard else [])
    data = _read_batch(sweep_uri, plans, ids, {"features": fcols, "evals": EVAL_COLUMNS})
    fparts = {k[0]: v for k, v in data["features"].partition_by("trial_id", as_dict=True).items()}
    eparts = {k[0]: v for k, v in data["evals"].partition_by("trial_id", as_dict=True).items()}
    empty_f, empty_e = data["features"].clear(), data["evals"].clear()
    out = []
    for t in trials:
        f = fparts.get(t["trial_id"], empty_f)
        e = eparts.get(t["trial_id"], empty_e)
        try:
            ev = trial_events(f, e, t, cfg)
            rd = run_data(f, e, t, ev) if cfg.scorecard else None
        except Exception as exc:  # noqa: BLE001 - recorded in the row, reported by the driver
            ev, rd = _error_row(t, exc), None
        out.append((ev, rd))
    return out


def _scan(sweep_uri: str, table: str, tries: int = 3) -> pl.LazyFrame:
    """``storage.scan`` with a retry: in a live sweep a part can be compacted away between the
    listing and the footer read, which the scanner reports as a bad file."""
    for i in range(tries):
        try:
            return scan(sweep_uri, table)
        except StorageError:
            if i == tries - 1:
                raise
            time.sleep(0.2 * (i + 1))
    raise AssertionError("unreachable")


def _batches(trials: list[dict], size: int) -> list[list[dict]]:
    return [trials[i:i + size] for i in range(0, len(trials), size)]


def _scan_tables(sweep_uri: str, tables: tuple[str, ...]) -> dict[str, pl.LazyFrame]:
    """Scans of several tables at once: listing and footer checks are I/O and pyarrow work
    that overlap well in threads (≈ 1.4× faster than one after another for 3 tables here)."""
    with ThreadPoolExecutor(max_workers=len(tables)) as pool:
        return dict(zip(tables, pool.map(lambda t: _scan(sweep_uri, t), tables)))


def _trials_per_task(n_trials: int, cfg: AggregateConfig, cpus: int) -> int:
    """Batch size: one task per CPU (at least MIN_TRIALS_PER_TASK trials each).

    Why not many small tasks: a task's read is a filter on the driver's scan plan, and that
    plan names every file of the table, so each task opens every file's footer to prune row
    groups (≈ 0.5 s per 1,000 files here) whatever its batch size. More tasks than CPUs would
    only repeat that. (A storage scan restricted to named trials would lift this.)"""
    if cfg.trials_per_task is not None:
        return max(1, int(cfg.trials_per_task))
    return max(MIN_TRIALS_PER_TASK, math.ceil(n_trials / max(1, cpus)))


def _run_batches(sp: SweepPath, trials: list[dict], plans: dict[str, pl.LazyFrame],
                 cfg: AggregateConfig, use_ray: bool) -> list[tuple[dict, RunData | None]]:
    plans = {t: plans[t] for t in ("features", "evals")}
    if not use_ray:
        # One process: a single batch, i.e. one filtered collect per table.
        return events_batch(sp.uri, plans, trials, cfg)

    import ray

    started = False
    if not ray.is_initialized():
        # A Ray job's driver has RAY_ADDRESS set; elsewhere start a private local cluster
        # ("local" never attaches to a stale one recorded in /tmp/ray).
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 log_to_driver=False)
        started = True
    try:
        size = _trials_per_task(len(trials), cfg, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1)(events_batch)
        plans_ref = ray.put(plans)
        refs = [task.remote(sp.uri, plans_ref, batch, cfg) for batch in _batches(trials, size)]
        out = []
        for part in ray.get(refs):
            out.extend(part)
        return out
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------
# The trials of a sweep
# ------------------------------------------------------------------------------------------

TRIAL_COLUMNS = ["trial_id", "sweep", "workload", "optimizer", "weight_decay", "seed", "status",
                 "steps", "config"]


def read_trials(sp: SweepPath, plan: pl.LazyFrame | None = None) -> pl.DataFrame:
    """The sweep's trials (one row each, newest attempt), plus trials that wrote features or
    evals but have no trials row (status "unknown"): their data must not go missing from the
    aggregate because one bookkeeping write failed. ``plan``: a scan of ``trials`` already made."""
    plan = plan if plan is not None else _scan(sp.uri, "trials")
    trials = plan.select(TRIAL_COLUMNS).collect()
    known = set(trials.get_column("trial_id").to_list())
    orphans = {}
    for table in ("features", "evals"):
        tdir = sp.file(table)
        for info in sp.root.list_files(tdir):
            rel = info.path[len(tdir) + 1:].split("/")
            if len(rel) != len(PARTITION_KEYS) + 1 or any(is_hidden(p) for p in rel):
                continue
            part, partition = parse_part_name(rel[-1]), parse_partition_dirs(rel[:-1])
            if part is None or partition is None or part.trial_id in known:
                continue
            orphans[part.trial_id] = {"trial_id": part.trial_id, "sweep": sp.sweep, **partition,
                                      "seed": None, "status": "unknown", "steps": None, "config": None}
    if orphans:
        extra = pl.DataFrame(list(orphans.values()), schema=trials.schema)
        trials = pl.concat([trials, extra], how="vertical")
    return trials.sort("trial_id")


# ------------------------------------------------------------------------------------------
# Summary: per scope × weight-decay arm
# ------------------------------------------------------------------------------------------

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "scope": pl.String, "weight_decay": pl.Float64, "n_runs": pl.Int64, "n_running": pl.Int64,
    "n_grokked": pl.Int64, "n_preceded": pl.Int64, "precedence": pl.String,
    "preceded_rate": pl.Float64, "preceded_lo": pl.Float64, "preceded_hi": pl.Float64,
    "preceded_of_grokked": pl.String, "n_alarmed": pl.Int64, "hits": pl.Int64,
    "hits_with_lead": pl.Int64, "late": pl.Int64, "misses": pl.Int64, "false_alarms": pl.Int64,
    "quiet": pl.Int64, "hit_rate": pl.Float64, "hit_lo": pl.Float64, "hit_hi": pl.Float64,
    "false_alarm_rate": pl.Float64, "false_alarm_lo": pl.Float64, "false_alarm_hi": pl.Float64,
    "lead_n": pl.Int64, "lead_median": pl.Float64, "lead_q1": pl.Float64, "lead_q3": pl.Float64,
    "lead_min": pl.Float64, "lead_max": pl.Float64,
    "fisher_p_preceded": pl.Float64, "fisher_odds_preceded": pl.Float64,
    "fisher_p_alarm": pl.Float64, "fisher_odds_alarm": pl.Float64,
}


def _arm_counts(arm: pl.DataFrame, conf: float) -> tuple[dict, Any]:
    counts = arm.select(
        n_runs=pl.len(),
        n_running=pl.col("running").fill_null(False).sum(),
        n_grokked=pl.col("grok_step").is_not_null().sum(),
        n_preceded=pl.col("preceded").fill_null(False).sum(),
    ).row(0, named=True)
    n, k, g = int(counts["n_runs"]), int(counts["n_preceded"]), int(counts["n_grokked"])
    prec = proportion(k, n, conf)
    det = evaluate_detector(zip(arm.get_column("alarm_step").to_list(),
                                arm.get_column("grok_step").to_list()), conf)
    row = {
        "n_runs": n, "n_running": int(counts["n_running"]), "n_grokked": g, "n_preceded": k,
        # The paper's count: controls count only if they grok *and* meet the criterion, so the
        # denominator is every run of the arm ("24/24 with weight decay, 0/24 without").
        "precedence": f"{k}/{n}", "preceded_rate": prec.rate, "preceded_lo": prec.lo,
        "preceded_hi": prec.hi, "preceded_of_grokked": f"{k}/{g}",
        "n_alarmed": det.hits + det.late + det.false_alarms,
        "hits": det.hits, "hits_with_lead": det.hits_with_lead, "late": det.late,
        "misses": det.misses, "false_alarms": det.false_alarms, "quiet": det.quiet,
        "hit_rate": det.hit_rate.rate, "hit_lo": det.hit_rate.lo, "hit_hi": det.hit_rate.hi,
        "false_alarm_rate": det.false_alarm_rate.rate, "false_alarm_lo": det.false_alarm_rate.lo,
        "false_alarm_hi": det.false_alarm_rate.hi,
        "lead_n": det.lead.n, "lead_median": det.lead.median, "lead_q1": det.lead.q25,
        "lead_q3": det.lead.q75, "lead_min": det.lead.min, "lead_max": det.lead.max,
    }
    return row, det


def summary_table(runs: pl.DataFrame, conf: float = 0.95) -> pl.DataFrame:
    """Precedence and detector statistics per (scope, weight-decay arm).

    Scopes: "all" runs, then each workload family (sorted). Arms: each weight-decay value,
    largest first. Runs with an aggregation ``error`` and trials with status failed/unknown
    are left out (they carry no evidence either way).
    Intervals are exact Clopper–Pearson at ``conf``; Fisher p-values (two-sided) compare each
    weight_decay > 0 arm with the weight_decay = 0 arm of the same scope — on "preceded vs
    not" over all runs, and on "any alarm vs none" — and are null for the control arm itself
    and in scopes without one.
    """
    ok = runs.filter(pl.col("error").is_null()) if "error" in runs.columns else runs
    # A trial that crashed (Tune gave up on it) or has no trials row is no evidence either
    # way: counting it as "not preceded" would turn 24/24 into 23/24. Diverged runs stay in:
    # divergence is an outcome of the training protocol, and it is reported per run.
    if "status" in ok.columns:
        ok = ok.filter(~pl.col("status").is_in(["failed", "unknown"]) | pl.col("status").is_null())
    scopes = [("all", ok)] + [(fam, ok.filter(pl.col("family") == fam))
                              for fam in sorted(ok.get_column("family").drop_nulls().unique().to_list())]
    rows = []
    for scope, df in scopes:
        arms = sorted(df.get_column("weight_decay").drop_nulls().unique().to_list(), reverse=True)
        stats = {wd: _arm_counts(df.filter(pl.col("weight_decay") == wd), conf) for wd in arms}
        control = stats.get(0.0)
        for wd in arms:
            row, det = stats[wd]
            row = {"scope": scope, "weight_decay": float(wd), **row,
                   "fisher_p_preceded": None, "fisher_odds_preceded": None,
                   "fisher_p_alarm": None, "fisher_odds_alarm": None}
            if control is not None and wd > 0:
                c_row, c_det = control
                odds, p = fisher_exact_2x2(row["n_preceded"], row["n_runs"] - row["n_preceded"],
                                           c_row["n_preceded"], c_row["n_runs"] - c_row["n_preceded"])
                cmp = compare_arms(det, c_det, conf)
                row.update(fisher_p_preceded=p, fisher_odds_preceded=odds,
                           fisher_p_alarm=cmp["fisher_p"], fisher_odds_alarm=cmp["fisher_odds_ratio"])
            rows.append(row)
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA, orient="row") if rows else pl.DataFrame(schema=SUMMARY_SCHEMA)


# ------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    """Plain JSON: NaN → null, ±inf → "inf"/"-inf" (strict JSON has neither), numpy → Python."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


def aggregate_sweep(path: str | os.PathLike, use_ray: bool = True, report: bool = True,
                    config: AggregateConfig | None = None) -> str:
    """Aggregate the sweep at ``path`` (ROOT/SWEEP, local or s3://); returns that folder's URI.

    Writes ``runs`` and ``summary`` (storage.write_table, atomic replace), ``scorecard.json``
    (a list of Prediction.as_dict) when ``config.scorecard``, then ``report.md`` + figures when
    ``report``. Raises StorageError naming the path when there is no sweep or no trial there.
    """
    cfg = config if config is not None else AggregateConfig()
    sp = SweepPath.parse(path)
    sp.check()
    plans = _scan_tables(sp.uri, ("trials", "features", "evals"))
    trials = read_trials(sp, plans["trials"])
    if trials.height == 0:
        raise StorageError(f"no trials in the sweep at {sp.uri}: nothing to aggregate yet", sp.uri)
    results = _run_batches(sp, trials.to_dicts(), plans, cfg, use_ray)

    rows = [ev for ev, _ in results]
    for r in rows:
        if r["error"]:
            warnings.warn(f"aggregate: trial {r['trial_id']}: {r['error']}", RuntimeWarning, stacklevel=2)
    runs = pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row").sort("trial_id")
    summary = summary_table(runs, cfg.conf)
    write_table(sp.root, sp.sweep, "runs", runs)
    write_table(sp.root, sp.sweep, "summary", summary)
    if cfg.scorecard:
        data = [rd for _, rd in sorted(results, key=lambda x: x[0]["trial_id"]) if rd is not None]
        card = [p.as_dict() for p in scorecard(data, precedence_ratio=cfg.precedence_ratio)]
        text = json.dumps(_jsonable(card), indent=2, allow_nan=False)
        sp.write_bytes("scorecard.json", text.encode())
    if report:
        from .report import write_report
        write_report(sp.text)
    return sp.uri


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def precedence_sentence(summary: pl.DataFrame) -> str:
    """The paper's sentence from the "all" scope: weight_decay > 0 arms pooled vs = 0."""
    allr = summary.filter(pl.col("scope") == "all")
    wd = allr.filter(pl.col("weight_decay") > 0)
    ctrl = allr.filter(pl.col("weight_decay") == 0)
    parts = []
    if wd.height:
        parts.append(f"{int(wd['n_preceded'].sum())}/{int(wd['n_runs'].sum())} runs with weight decay")
    if ctrl.height:
        parts.append(f"{int(ctrl['n_preceded'].sum())}/{int(ctrl['n_runs'].sum())} without")
    if not parts:
        return "gap dynamics preceded grokking in no run (no arm with a weight decay value)"
    return "gap dynamics preceded grokking in " + ", ".join(parts)


def precedence_text(summary: pl.DataFrame) -> str:
    """Fixed-width table of the summary for a terminal."""
    head = (f"{'scope':<10} {'wd':>6} {'runs':>5} {'live':>4} {'grok':>5} {'preceded':>9} "
            f"{'95% CI':>13} {'hits':>5} {'late':>4} {'miss':>4} {'FA':>4} {'lead med':>9} "
            f"{'p(prec)':>8} {'p(alarm)':>8}")
    lines = [head, "-" * len(head)]
    for r in summary.iter_rows(named=True):
        lead = "—" if r["lead_median"] is None or math.isnan(r["lead_median"]) else f"{r['lead_median']:.0f}"
        ci = f"[{r['preceded_lo']:.2f}, {r['preceded_hi']:.2f}]"
        lines.append(
            f"{r['scope']:<10} {r['weight_decay']:>6g} {r['n_runs']:>5} {r['n_running']:>4} "
            f"{r['n_grokked']:>5} {r['precedence']:>9} {ci:>13} "
            f"{r['hits']:>5} {r['late']:>4} {r['misses']:>4} {r['false_alarms']:>4} {lead:>9} "
            f"{_fmt_p(r['fisher_p_preceded']):>8} {_fmt_p(r['fisher_p_alarm']):>8}")
    return "\n".join(lines)


def aggregate_main(path: str, use_ray: bool = True, report: bool = True) -> int:
    """``edgesweep aggregate ROOT/SWEEP``: aggregate, print the precedence table, say where the
    outputs went. 0 on success, 2 with one message (no traceback) when there is no sweep."""
    try:
        t0 = time.perf_counter()
        uri = aggregate_sweep(path, use_ray=use_ray, report=report)
        summary = scan(uri, "summary").collect()
        runs = scan(uri, "runs").collect()
    except StorageError as exc:
        print(f"edgesweep aggregate: error: {exc}", file=sys.stderr)
        return 2
    n_running = int(runs.get_column("running").fill_null(False).sum())
    print(precedence_text(summary))
    print()
    print(precedence_sentence(summary)
          + (f" ({n_running} trial(s) still running: provisional)" if n_running else ""))
    n_err = runs.filter(pl.col("error").is_not_null()).height
    if n_err:
        print(f"{n_err} trial(s) could not be evaluated; see the 'error' column of runs")
    print(f"\naggregated {runs.height} trials in {time.perf_counter() - t0:.1f}s → {uri}/runs, "
          f"{uri}/summary, {uri}/scorecard.json" + (f", {uri}/report.md" if report else ""))
    return 0
