"""One typed record per trial, built in one place from storage, and the analysis settings.

Everything the analysis computes about a trial starts from a :class:`TrialRecord`: the trial's
keys, the settings parsed once from its stored config (monitor window W, grok and memorisation
thresholds), and its feature and eval rows as Polars frames sorted by step. The rules that
every consumer must agree on live here and nowhere else:

* **full window**: a window holding W rows, W the trial's configured ``monitor.window`` (the
  largest window seen only when the config is unknown). A run stopped after 6 snapshots at
  W = 10 has no full window. Filling windows are a different object (fewer singular values),
  so the precedence statistic, the detectors and the scorecard use full windows by default.
* **finite window**: a row the monitor did not flag ``nonfinite`` (a diverged update).
* **grok / memorisation step**: first eval with ``grok_acc`` ≥ the trial's own
  ``stop.grok_threshold`` / ``memo_acc`` ≥ ``stop.memo_threshold`` (so the analysis agrees with
  what the trainer reported live), the analysis defaults when the config has none.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Callable, TypeVar

import numpy as np
import polars as pl

from ..storage import StorageError, StorageWarning, SweepPath, check_sweep, scan, trials_in_data
from ..storage.checks import unlisted_folders
from ..storage.completeness import FINISHED, shortfall, snapshot_every
from ..storage.liveness import owner_gone, read_driver_record
from .detectors import DEFAULT_DETECTOR, make_detector
from .events import GROK_THRESHOLD, MEMORIZATION_THRESHOLD, PRECEDENCE_RATIO, grok_step, memorization_step

__all__ = ["AnalysisConfig", "TrialSettings", "TrialRecord", "TRIAL_COLUMNS", "FEATURE_COLUMNS",
           "EVAL_COLUMNS", "OWNER_COLUMNS", "INTERRUPTED", "UNFINISHED", "read_trials", "read_records", "column",
           "CheckedSweep", "read_checked"]

#: Trials that carry no evidence either way: crashed, known only from their data files, or
#: incomplete (stored data damaged or missing, see :func:`incompleteness`).
NOT_EVIDENCE = ("failed", "unknown", "incomplete")
INCOMPLETE = "incomplete"
#: A trial whose row says ``running`` but whose worker or driver is gone (read_trials).
INTERRUPTED = "interrupted"
#: Trials still growing or stopped midway: their rows are real but their story is unfinished,
#: so a run that has not grokked is no negative yet.
UNFINISHED = ("running", INTERRUPTED)


@dataclass(frozen=True)
class AnalysisConfig:
    """How a sweep is analysed; stored with every output it produced (``analysis_config``).

    grok_threshold / memo_threshold: for trials whose config has none. precedence_ratio: the
    paper's 1.5. full_windows_only: drop filling windows from the precedence statistic and the
    detector (the all-windows precedence is reported beside it). detector / detector_params:
    the prospective detector, by name (``detectors.DETECTORS``). conf: interval coverage.
    """

    grok_threshold: float = GROK_THRESHOLD
    memo_threshold: float = MEMORIZATION_THRESHOLD
    precedence_ratio: float = PRECEDENCE_RATIO
    full_windows_only: bool = True
    detector: str = DEFAULT_DETECTOR
    detector_params: dict = field(default_factory=dict)
    conf: float = 0.95

    def __post_init__(self):
        make_detector(self.detector, self.detector_params)  # unknown name / parameter: fail now

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _number(x: Any, default: float) -> float:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else default


@dataclass(frozen=True)
class TrialSettings:
    """What the analysis needs from a trial's resolved config, parsed once."""

    window: int | None
    grok_threshold: float
    memo_threshold: float
    block: str | None = None      # the spec block the trial was drawn in (its design, not its outcome)
    #: Why the trials row's config cannot be read (None: it can, or there is none — a row
    #: written before configs were recorded). Defaults in its place would be another criterion
    #: than the trial ran with, so such a trial is incomplete (:meth:`TrialRecord.incompleteness`).
    problem: str | None = None

    @classmethod
    def parse(cls, config_json: str | None, cfg: AnalysisConfig) -> "TrialSettings":
        problem = None
        try:
            conf = json.loads(config_json) if config_json else {}
        except (TypeError, ValueError) as exc:
            conf, problem = {}, f"its trials row's config is not valid JSON ({exc})"
        if not isinstance(conf, dict):
            conf, problem = {}, f"its trials row's config is a JSON {type(conf).__name__}, not an object"
        sections = {k: conf.get(k) for k in ("stop", "monitor")}
        odd = [f"{k} = {v!r}" for k, v in sections.items() if v is not None and not isinstance(v, dict)]
        if problem is None and odd:
            problem = f"its trials row's config holds unusable values: {', '.join(odd)} (not an object)"
        stop = sections["stop"] if isinstance(sections["stop"], dict) else {}
        mon = sections["monitor"] if isinstance(sections["monitor"], dict) else {}
        w = mon.get("window")
        window = w if isinstance(w, int) and not isinstance(w, bool) and w >= 2 else None
        thresholds = {k: _number(stop.get(k), getattr(cfg, k)) for k in ("grok_threshold", "memo_threshold")}
        given = {"monitor.window": (w, window), **{f"stop.{k}": (stop.get(k), v) for k, v in thresholds.items()}}
        bad = [f"{k} = {v!r}" for k, (v, used) in given.items() if v is not None and v != used]
        if problem is None and bad:
            problem = f"its trials row's config holds unusable values: {', '.join(bad)}"
        return cls(window=window, **thresholds, problem=problem,
                   block=conf.get("block") if isinstance(conf.get("block"), str) else None)


def column(df: pl.DataFrame, name: str) -> np.ndarray:
    """Float numpy view of a column (nulls → NaN); all-NaN when the column is absent."""
    if name not in df.columns:
        return np.full(df.height, np.nan)
    return df.get_column(name).cast(pl.Float64).to_numpy().astype(float, copy=False)


@dataclass
class TrialRecord:
    """One trial: its ``trials`` row (``trial``), settings, and its rows sorted by step."""

    trial: dict
    settings: TrialSettings
    features: pl.DataFrame
    evals: pl.DataFrame

    def __post_init__(self):
        self.features = self.features.sort("step") if "step" in self.features.columns else self.features
        self.evals = self.evals.sort("step") if "step" in self.evals.columns else self.evals

    @property
    def trial_id(self) -> str:
        return self.trial["trial_id"]

    @property
    def family(self) -> str:
        """The reporting family, as the platform annotated it (``workloads.catalog.family``);
        the analysis depends on storage only, so it does not look workloads up itself."""
        return self.trial.get("family") or self.trial.get("workload") or "unknown"

    @cached_property
    def finite(self) -> pl.DataFrame:
        """Feature rows of finite training (the monitor's ``nonfinite`` rows dropped)."""
        f = self.features
        return f.filter(~pl.col("nonfinite").fill_null(False)) if "nonfinite" in f.columns else f

    @cached_property
    def full_window(self) -> int | None:
        """W of a full window: the configured window, else the largest seen, else None."""
        if self.settings.window is not None:
            return self.settings.window
        if "window" in self.finite.columns and self.finite.height:
            return self.finite.get_column("window").max()
        return None

    def windows(self, full_only: bool = True) -> pl.DataFrame:
        """Finite windows in step order; only full ones when ``full_only`` (and W is known:
        without a window column every window counts as full, nothing tells them apart)."""
        f = self.finite
        if full_only and self.full_window is not None and "window" in f.columns:
            f = f.filter(pl.col("window") == self.full_window)
        return f

    @cached_property
    def grok_step(self) -> int | None:
        e = self.evals
        return grok_step(e["step"].to_numpy(), column(e, "grok_acc"), self.settings.grok_threshold) if e.height else None

    @cached_property
    def memorization_step(self) -> int | None:
        e = self.evals
        return (memorization_step(e["step"].to_numpy(), column(e, "memo_acc"), self.settings.memo_threshold)
                if e.height else None)

    @property
    def steps(self) -> int | None:
        """The furthest step the trial reached: its trials row or, while it runs, its data."""
        seen = [int(df["step"].max()) for df in (self.features, self.evals) if df.height]
        reported = [int(self.trial["steps"])] if self.trial.get("steps") is not None else []
        return max(reported + seen, default=None)

    def incompleteness(self) -> str | None:
        """Why this trial's stored rows cannot be analysed as the trial ran (None if they can).
        Any trial: its ``trials`` row must give a usable config (:attr:`TrialSettings.problem`)
        and a weight decay that is a number ≥ 0 (the arm it belongs to). A finished trial: its
        rows must reach the step its ``trials`` row records (:func:`storage.completeness.shortfall`:
        evaluations to that step, features to its last snapshot), and the grok step it saw live
        must be the one its evaluations give. A deleted or truncated part shows up here even when
        its seal record went with it."""
        if self.settings.problem is not None:
            return self.settings.problem
        wd = self.trial.get("weight_decay")
        if not (isinstance(wd, (int, float)) and not isinstance(wd, bool) and math.isfinite(wd) and wd >= 0):
            return f"its trials row's weight_decay is {wd!r}, not a number ≥ 0 (no arm to count it in)"
        if self.trial.get("status") not in FINISHED or self.trial.get("steps") is None:
            return None
        f = self.features
        bad = f.filter(pl.col("nonfinite").fill_null(False)) if "nonfinite" in f.columns else f.clear()
        last = {name: int(df["step"].max()) if df.height else None
                for name, df in (("evals", self.evals), ("features", f), ("nonfinite", bad))}
        short = shortfall(self.trial.get("status"), self.trial.get("steps"), last["evals"], last["features"],
                          snapshot_every(self.trial.get("config")), last["nonfinite"])
        if short is not None:
            return short[1]
        live = self.trial.get("live_grok_step")
        if live is not None and self.grok_step != live:
            return f"it grokked at step {live} during training but its evaluations give {self.grok_step}"
        return None

    @property
    def final_val_loss(self) -> float:
        v = column(self.evals, "test_loss")
        v = v[np.isfinite(v)]
        return float(v[-1]) if v.size else math.nan


# ------------------------------------------------------------------------------------------
# Reading from storage
# ------------------------------------------------------------------------------------------

TRIAL_COLUMNS = ["trial_id", "sweep", "workload", "optimizer", "weight_decay", "seed", "status",
                 "steps", "config", "grok_step"]
#: What a ``running`` row says about its owner (read when present; older sweeps lack them).
OWNER_COLUMNS = ["started_at", "pid", "pid_start", "hostname"]
#: Feature columns a record carries (sigma/alpha/adiabatic/bbp only feed the scorecard).
FEATURE_COLUMNS = ["trial_id", "step", "window", "sigma", "k_star", "k_star_weighted", "gap_ratio",
                   "gap", "g23", "delta_gram_fro", "adiabatic", "alpha", "bbp_ratio", "update_norm",
                   "subspace_rotation",
                   "nonfinite"]
EVAL_COLUMNS = ["trial_id", "step", "grok_acc", "memo_acc", "test_loss", "train_loss", "test_acc",
                "train_acc"]


#: ``read_trials(driver=...)``'s default: read the sweep's driver record itself.
READ_DRIVER = object()


def read_trials(sp: SweepPath, plan: pl.LazyFrame | None = None, *, driver=READ_DRIVER) -> pl.DataFrame:
    """The sweep's trials (one row each, newest attempt), plus trials that wrote features or
    evals but have no trials row (status "unknown"): their data must not go missing from the
    aggregate because one bookkeeping write failed. ``driver``: the sweep's driver record
    (``DriverRecord`` or None), when the caller has read it already and wants the interrupted
    marks to agree with its own reading."""
    plan = plan if plan is not None else scan(sp.uri, "trials")
    names = plan.collect_schema().names()
    owner = [c for c in OWNER_COLUMNS if c in names]
    trials = plan.select(TRIAL_COLUMNS + owner).collect().rename({"grok_step": "live_grok_step"})
    # A row without a status (no writer leaves one) is no evidence of anything: "unknown".
    trials = trials.with_columns(pl.col("status").fill_null("unknown"))
    trials = _mark_interrupted(sp, trials, driver).drop(owner)
    known = set(trials.get_column("trial_id").to_list())
    orphans = [{"trial_id": tid, "sweep": sp.sweep, **part, "seed": None, "status": "unknown",
                "steps": None, "config": None, "live_grok_step": None, "status_note": None}
               for tid, part in sorted(trials_in_data(sp).items()) if tid not in known]
    if orphans:
        trials = pl.concat([trials, pl.DataFrame(orphans, schema=trials.schema)], how="vertical")
    return trials.sort("trial_id")


def _mark_interrupted(sp: SweepPath, trials: pl.DataFrame, driver=READ_DRIVER) -> pl.DataFrame:
    """``running`` rows whose worker or driver is gone become ``interrupted``, with the reason in
    ``status_note`` (storage/liveness.py): their rows stop where the owner died, and only a
    ``--resume`` continues them."""
    notes: list[str | None] = [None] * trials.height
    if "running" in trials["status"].to_list():
        if driver is READ_DRIVER:
            driver = read_driver_record(sp)
        for i, row in enumerate(trials.iter_rows(named=True)):
            if row["status"] == "running":
                notes[i] = owner_gone(row, driver)
    note = pl.Series("status_note", notes, dtype=pl.String)
    status = pl.when(note.is_not_null()).then(pl.lit(INTERRUPTED)).otherwise(pl.col("status"))
    return trials.with_columns(note).with_columns(status.alias("status"))


def _select(plan: pl.LazyFrame, wanted: list[str], ids: list[str]) -> pl.DataFrame:
    names = plan.collect_schema().names()
    return plan.filter(pl.col("trial_id").is_in(ids)).select([c for c in wanted if c in names]).collect()


@dataclass
class CheckedSweep:
    """A sweep read past its damage: ``plans`` (features, evals) over the intact files,
    ``trials`` (:func:`read_trials`), and ``damaged`` — trial id → the lines naming its damaged
    or missing files (seal records, and rows that end before the trials row says)."""

    plans: dict[str, pl.LazyFrame]
    trials: pl.DataFrame
    damaged: dict[str, list[str]]


#: Reads of a running sweep, each from a fresh listing, before a file that vanished between the
#: listing and the read (a finishing trial compacts its parts and deletes them) is an error.
READ_ATTEMPTS = 3


def read_checked(sp: SweepPath, command: str) -> CheckedSweep:
    """What ``aggregate`` and ``detect`` read: every damaged or missing file is found by the
    seal records first and warned once (``command: <line>``, a StorageWarning); the trials
    it belongs to are named in ``damaged`` for the caller to leave out, and everything else is
    read from the files that are intact."""
    integrity = check_sweep(sp.root, sp.sweep, tables=("trials", "features", "evals"))
    unlisted = unlisted_folders(integrity.problems)
    if unlisted:
        # Which trials such a folder holds is unknown, so no count over the sweep could be trusted.
        raise StorageError("; ".join(p.line() for p in unlisted) + f" — {command} needs every trial: "
                           "run it again once the folder can be listed", [p.path for p in unlisted])
    damaged: dict[str, list[str]] = {}
    for p in integrity.damage:
        if p.trial_id is not None:
            damaged.setdefault(p.trial_id, []).append(p.line())
        warnings.warn(f"{command}: {p.line()}", StorageWarning, stacklevel=4)  # past read_fresh
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StorageWarning)  # already reported above, file by file
        plans = {t: scan(sp.uri, t, on_error="skip", verify_content=False) for t in ("trials", "features", "evals")}
    trials = read_trials(sp, plans.pop("trials"))
    return CheckedSweep(plans, trials, damaged)


T = TypeVar("T")


def read_fresh(sp: SweepPath, command: str, read: Callable[[CheckedSweep], T],
               vanished: Callable[[T], bool] = lambda result: False) -> tuple[CheckedSweep, T]:
    """``read`` over :func:`read_checked` of a sweep that may be running: when a file the listing
    named is gone by the time it is read (``read`` raised FileNotFoundError, or ``vanished`` says
    its result met one), a trial finished between the two and compacted its parts — nothing is
    damaged, the seal records moved with the files — so list again and read again, up to
    ``READ_ATTEMPTS`` times. The last attempt's FileNotFoundError or result is the caller's."""
    for attempt in range(1, READ_ATTEMPTS + 1):
        checked = read_checked(sp, command)
        try:
            result = read(checked)
        except FileNotFoundError:
            if attempt == READ_ATTEMPTS:
                raise
            continue
        if attempt == READ_ATTEMPTS or not vanished(result):
            return checked, result
    raise AssertionError("unreachable: the last attempt returns or raises")


def read_records(plans: dict[str, pl.LazyFrame], trials: list[dict], cfg: AnalysisConfig,
                 feature_columns: list[str] = FEATURE_COLUMNS) -> list[TrialRecord]:
    """Records of ``trials`` (``trials`` rows as dicts) from scans of ``features`` and
    ``evals``: one filtered collect per table, pushed down to the Parquet scan."""
    ids = [t["trial_id"] for t in trials]
    f = _select(plans["features"], feature_columns, ids)
    e = _select(plans["evals"], EVAL_COLUMNS, ids)
    f_by = {k[0]: v for k, v in f.partition_by("trial_id", as_dict=True).items()} if f.height else {}
    e_by = {k[0]: v for k, v in e.partition_by("trial_id", as_dict=True).items()} if e.height else {}
    return [TrialRecord(t, TrialSettings.parse(t.get("config"), cfg),
                        f_by.get(t["trial_id"], f.clear()), e_by.get(t["trial_id"], e.clear()))
            for t in trials]
