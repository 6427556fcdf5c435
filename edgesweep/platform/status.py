"""`edgesweep status ROOT/SWEEP [--watch]`: a live view of a sweep, read from its storage alone.

It needs no connection to the Ray cluster or the driver — only the sweep folder (local or
s3://), so it works from any machine while the sweep runs as a Ray job elsewhere. Per trial:
status, step (of max), steps/s, latest test accuracy (the grok criterion's), latest g23 and gap
ratio R (full windows), memorisation / grok / alarm steps so far, and an ETA; above the table
the counts by status, the throughput, groks and alarms so far, and the sweep's ETA.

Where each number comes from:

* the ``trials``, ``features`` and ``evals`` tables — the source of truth; the events are the
  aggregation's own (:func:`edgesweep.analysis.run_row` on each trial's record: the same grok
  rule and the same detector replay as ``runs``), so an alarm shown here is the alarm the
  report will count. Rows reach storage when a trial seals them at its checkpoints, so a running
  trial's stored step advances in steps of ``checkpoint_every``;
* Tune's experiment state in ``<sweep>/_tune/experiment_state-*.json``, when it can be read:
  the trials not started yet (pending), every trial's ``max_steps``, and the trainer's own
  latest report (fresher step and steps/s). It is Ray's internal format, so it is only ever an
  addition: when it is missing or unreadable the view falls back to storage alone (pending
  trials are then unknown, and steps/s is measured between refreshes).

On a terminal the view refreshes in place (rich, when installed; else ANSI redraw); otherwise it
prints plain lines — a summary line per refresh and one line per trial that changed — so a
log file or CI stays readable. A finished sweep (every trial in a final status, none pending;
an ``unknown`` trial — stored rows without a trials row — counts as done once Tune's state
shows the driver is not running it) prints the final table and exits 0; so does a single look
without ``--watch``. A watched sweep whose driver is gone (``_driver.json``: ended, its process
dead, or no heartbeat) with trials unfinished cannot move on by itself: the watch prints the
table and how to resume, and exits 1. So does one without ``_driver.json`` (copied, or older)
once every unfinished trial's worker is known to be gone.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field

import polars as pl

from ..analysis import AnalysisConfig, read_records, read_trials, run_row
from ..analysis.record import INCOMPLETE
from ..analysis.runs import incomplete_row
from ..storage import StorageError, StorageWarning, SweepPath, scan
from ..storage.liveness import DRIVER_FILE, driver_gone, read_driver_record
from ..storage.schema import FINISHED
from .spec_record import SPEC_RECORD, read_spec_record
from .tune_state import TUNE_STATE, has_experiment_state, newest_state_files, tune_state_problem

__all__ = ["TrialView", "SweepView", "SweepWatcher", "status_main"]

#: A finished trial with a damaged or missing file: `aggregate` leaves it out of the counts as
#: ``incomplete`` (analysis.record.INCOMPLETE), and the live view says the same.
DAMAGED = "incomplete"
FINAL = FINISHED + ("failed", DAMAGED)
#: Tune's trial statuses → ours, for trials the tables do not know yet.
TUNE_STATUS = {"PENDING": "pending", "RUNNING": "starting", "PAUSED": "paused", "TERMINATED": "completed",
               "ERROR": "failed"}
ORDER = {"running": 0, "starting": 1, "interrupted": 2, "unknown": 3, "paused": 4, "pending": 5}


@dataclass
class TrialView:
    trial_id: str
    status: str
    workload: str | None = None
    weight_decay: float | None = None
    seed: int | None = None
    step: int | None = None
    max_steps: int | None = None
    steps_per_s: float | None = None
    test_acc: float | None = None
    g23: float | None = None
    gap_ratio: float | None = None
    memo_step: int | None = None
    grok_step: int | None = None
    alarm_step: int | None = None
    eta_s: float | None = None
    #: Not final, but nothing will change it: an ``unknown`` trial (stored rows, no trials row)
    #: that Tune's state does not list as pending or running.
    settled: bool = False

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def done(self) -> bool:
        """What a watch waits for: a final status, or settled."""
        return self.final or self.settled


@dataclass
class SweepView:
    sweep: str
    uri: str
    trials: list[TrialView]
    taken_at: float
    planned: int | None = None          # from Tune's state; None when unknown
    notes: list[str] = field(default_factory=list)
    driver_gone: str | None = None      # why the sweep's driver is gone; None while it may run

    @property
    def stalled(self) -> bool:
        """Unfinished, and nothing can move it on: its driver is gone (a new one, with
        ``--resume``, continues it) — the point where ``--watch`` stops waiting."""
        return not self.finished and self.driver_gone is not None

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def finished(self) -> bool:
        return bool(self.trials) and all(t.done for t in self.trials)

    @property
    def throughput(self) -> float:
        return sum(t.steps_per_s or 0.0 for t in self.trials if t.status == "running")

    @property
    def eta_s(self) -> float | None:
        """Remaining steps (running trials to their target, pending ones their max_steps) over
        the current throughput: an upper bound when trials stop after grokking."""
        rate = self.throughput
        if self.finished:
            return 0.0
        if rate <= 0:
            return None
        left = 0
        for t in self.trials:
            if t.done:
                continue
            if t.max_steps is None:
                return None
            left += max(0, t.max_steps - (t.step or 0))
        return left / rate


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _int(x) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _target(config: dict, grok_step: int | None) -> int | None:
    """The step a trial stops at: max_steps, or earlier once it grokked with stop.after_grok."""
    max_steps = _int((config.get("train") or {}).get("max_steps"))
    after = _int((config.get("stop") or {}).get("after_grok"))
    if max_steps is not None and grok_step is not None and after is not None:
        return min(max_steps, grok_step + after)
    return max_steps


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def read_tune_state(sp: SweepPath, notes: list[str] | None = None) -> dict[str, dict] | None:
    """{trial_id: {"status", "config", "step", "steps_per_s"}} from Tune's newest experiment
    state in ``<sweep>/_tune``, or None when there is none or it cannot be read (then the file
    and why go to ``notes``)."""
    newest = None
    try:
        newest = newest_state_files(sp.root, sp.file("_tune")).get(TUNE_STATE)
        if newest is None:
            return None
        raw = sp.read_bytes(f"_tune/{newest.rpartition('/')[2]}")
        doc = json.loads(raw) if raw else None
        out = {}
        for item in doc["trial_data"]:
            state = json.loads(item[0])
            meta = json.loads(item[1]) if len(item) > 1 else {}
            trial = (state.get("config") or {}).get("trial") or {}
            tid = trial.get("trial_id")
            if not tid:
                continue
            last = meta.get("last_result") or {}
            out[tid] = {"status": state.get("status"), "config": trial,
                        "step": _int(last.get("step")), "steps_per_s": _finite(last.get("steps_per_s")),
                        "at": _finite(last.get("timestamp"))}
        return out
    except (OSError, StorageError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        if notes is not None and newest is not None and not _just_written(sp, newest):
            # (Tune copies the file into place, not atomically: a fresh one may be mid-copy)
            notes.append(f"_tune/{newest.rpartition('/')[2]} is unreadable ({type(exc).__name__}: {exc}): "
                         "Tune's view of the trials is not used")
        return None  # Ray's internal format: never more than an addition (module docstring)


def _just_written(sp: SweepPath, path: str, seconds: float = 30.0) -> bool:
    try:
        mtime = sp.root.fs.get_file_info(path).mtime
    except (OSError, ValueError):
        return False
    return mtime is not None and time.time() - mtime.timestamp() < seconds


def recorded_plan(sp: SweepPath, notes: list[str] | None = None) -> dict[str, dict] | None:
    """The trials the driver started the sweep with (``_spec.json``), shaped like
    :func:`read_tune_state`'s answer with every trial pending; None without a readable record
    (why it is unreadable goes to ``notes``)."""
    try:
        doc = read_spec_record(sp)
    except (OSError, StorageError, ValueError) as exc:
        if notes is not None:
            notes.append(f"{SPEC_RECORD} is unreadable ({exc}): the trials it lists are not shown")
        return None
    if doc is None:
        return None
    return {t["trial_id"]: {"status": "PENDING", "config": t, "step": None, "steps_per_s": None}
            for t in doc["trials"]} or None


def _settle_unknown(views: dict[str, TrialView], tune: dict[str, dict] | None, driver) -> int:
    """Marks ``unknown`` trials that nothing will change as settled; returns how many. Such a
    trial has rows but no trials row (left by a garbage or foreign part file, or by a trial
    whose bookkeeping write failed, or written without the driver), or a trials row without a
    status (no writer leaves one). Tune's state tells whether the driver still runs it. Without
    that state: with a driver record it may be running, and the watch waits (until the driver
    is gone); with no driver record either, no driver runs anything here — a folder of rows
    written by other means — and nothing will change it."""
    if tune is None:
        if driver is not None:
            return 0
        tune = {}
    n = 0
    for tid, v in views.items():
        if v.status == "unknown" and TUNE_STATUS.get((tune.get(tid) or {}).get("status"), "") not in (
                "pending", "starting", "paused"):
            v.settled = True
            n += 1
    return n


def _no_driver_left(trials: list[TrialView]) -> str | None:
    """Without a driver record (a copied sweep, or one run before edgesweep recorded its driver)
    nothing says whether a driver lives — except that every unfinished trial's worker is known
    to be gone (``interrupted``): then no one is running the sweep, and a watch would wait forever."""
    left = [t for t in trials if not t.done]
    if left and all(t.status == "interrupted" for t in left):
        return "the sweep has no driver record (_driver.json) and every unfinished trial's worker is gone"
    return None


class SweepWatcher:
    """Polls one sweep folder; remembers what it saw to measure steps/s and to cache the event
    rows of finished trials (they cannot change)."""

    def __init__(self, path: str, cfg: AnalysisConfig | None = None):
        self.sp = SweepPath.parse(path)
        self.cfg = cfg or AnalysisConfig()
        self._done_rows: dict[str, dict] = {}
        self._first_seen: dict[str, tuple[int, float]] = {}   # trial → (step, time) first seen
        self._changed: dict[str, tuple[int, float]] = {}      # trial → (step, time) it last changed
        self.incomplete: dict[str, str] = {}  # finished trial → why its rows are not its record

    def _missing_tables(self) -> StorageError | None:
        """Why the folder has no trials/features/evals tables yet; None when it has them."""
        try:
            self.sp.check()
            return None
        except StorageError as exc:
            return exc

    def poll(self) -> SweepView:
        now = time.time()
        notes: list[str] = []
        tune = read_tune_state(self.sp, notes)
        driver = read_driver_record(self.sp)  # read once: the interrupted marks and driver_gone agree
        if driver is None and self.sp.root.exists(self.sp.file(DRIVER_FILE)):
            notes.append(f"{DRIVER_FILE} is unreadable or malformed: whether a driver runs the sweep is judged "
                         "from its trials' workers alone")
        views: dict[str, TrialView] = {}
        missing = self._missing_tables()
        if missing is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", StorageWarning)
                views = self._from_tables(now, tune or {}, driver)
            warned = [w.message for w in caught if isinstance(w.message, StorageWarning)]
            skipped = list(dict.fromkeys(str(m).removeprefix("skipping ") for m in warned))
            if skipped:
                notes.append(f"{len(skipped)} unreadable file(s) skipped: {skipped[0]}"
                             + (f" (and {len(skipped) - 1} more: `edgesweep verify` lists them)" if len(skipped) > 1
                                else ""))
                # A finished trial's files no longer change: one that cannot be read is damage,
                # not a race with compaction. Running trials keep their status.
                for tid in {m.trial_id for m in warned}:
                    if tid in views and views[tid].status in FINISHED + ("failed",):
                        views[tid].status = DAMAGED
            if self.incomplete:
                tid, why = next(iter(sorted(self.incomplete.items())))
                more = f" (and {len(self.incomplete) - 1} more)" if len(self.incomplete) > 1 else ""
                notes.append(f"{len(self.incomplete)} trial(s) left out of the counts, as `aggregate` leaves them "
                             f"out: {tid}: {why}{more}")
        elif not tune:
            raise missing  # and no Tune state either
        planned = tune if tune is not None else recorded_plan(self.sp, notes)
        unlisted = [tid for tid in (planned or {}) if tid not in views]
        for tid, t in (planned or {}).items():
            if tid not in views:  # planned, or started but has written nothing yet
                views[tid] = TrialView(tid, TUNE_STATUS.get(t["status"], str(t["status"]).lower()),
                                       workload=t["config"].get("workload"),
                                       weight_decay=t["config"].get("weight_decay"),
                                       seed=t["config"].get("seed"), max_steps=_target(t["config"], None),
                                       step=t["step"], steps_per_s=t["steps_per_s"])
        finished = driver is not None and driver.outcome == "finished"
        if tune is None and planned and unlisted and not finished:
            notes.append("no readable Tune state in _tune/: the trials without rows are listed from _spec.json "
                         "as pending (whether Tune had started or failed them is not known)")
        elif tune is None and not planned and not finished and not any(n.startswith("_tune/") for n in notes):
            # (a finished sweep copied without Tune's state has no trial left to start)
            notes.append("no readable Tune state in _tune/ (not written yet, or not kept): trials that have "
                         "not started are not shown")
        settled = _settle_unknown(views, tune, driver)
        if settled:
            why = ("are not pending or running in Tune's state" if tune is not None else
                   "have no driver here to run them (no _driver.json, no Tune state)")
            notes.append(f"{settled} trial(s) of status unknown (stored rows without a trials row, or a trials row "
                         f"without a status) {why}: the watch does not wait for them")
        trials = sorted(views.values(), key=lambda v: (1 if v.final else 0, ORDER.get(v.status, 9), v.trial_id))
        if any(not t.done or t.status == "failed" for t in trials) and (low := self.sp.root.low_space()):
            # A full disk leaves no record of itself: the trial's error and the driver's end are
            # writes that fail too, so its trials show as interrupted. Say the likely cause.
            notes.append(f"{low}: a trial that cannot store its rows fails, and one that cannot record its end "
                         "shows as interrupted; free space, then resume")
        gone = driver_gone(driver) if driver is not None else _no_driver_left(trials)
        return SweepView(self.sp.sweep, self.sp.uri, trials, now, planned=len(planned) if planned else None, notes=notes,
                         driver_gone=gone)

    def _from_tables(self, now: float, tune: dict, driver) -> dict[str, TrialView]:
        uri = self.sp.uri
        plans = {t: scan(uri, t, on_error="skip") for t in ("trials", "features", "evals")}
        trials = read_trials(self.sp, plans["trials"], driver=driver)
        names = plans["trials"].collect_schema().names()
        extra = plans["trials"].select([c for c in ("trial_id", "started_at", "wall_s") if c in names]).collect()
        extra = {r["trial_id"]: r for r in extra.iter_rows(named=True)}
        rows = trials.to_dicts()
        todo = [t for t in rows if not (t["status"] in FINAL and self._done_rows.get(t["trial_id"], {}).get("_key")
                                        == (t["status"], t["steps"]))]
        latest: dict[str, dict] = {}
        if todo:
            for rec in read_records(plans, todo, self.cfg):
                try:
                    run = run_row(rec, self.cfg)
                    full = rec.windows(full_only=True)
                    last_f = full.tail(1).to_dicts()[0] if full.height else {}
                    last_e = rec.evals.tail(1).to_dicts()[0] if rec.evals.height else {}
                except Exception as exc:  # noqa: BLE001 — as aggregate: one bad trial, not the view
                    run = incomplete_row(rec.trial, self.cfg, f"its stored rows cannot be analysed "
                                         f"({type(exc).__name__}: {exc})")
                    last_f = last_e = {}
                run.update(_key=(rec.trial.get("status"), rec.trial.get("steps")),
                           _g23=last_f.get("g23"), _r=last_f.get("gap_ratio"), _acc=last_e.get("grok_acc"))
                latest[rec.trial_id] = run
                if rec.trial.get("status") in FINAL:
                    self._done_rows[rec.trial_id] = run
        out = {}
        self.incomplete = {}
        for t in rows:
            tid = t["trial_id"]
            run = latest.get(tid) or self._done_rows[tid]
            try:
                config = json.loads(t["config"]) if t.get("config") else {}
            except ValueError:
                config = {}
            config = config if isinstance(config, dict) else {}
            live = tune.get(tid, {})
            config = config or live.get("config") or {}
            step = run["steps"]
            if t["status"] == "running" and live.get("step") is not None:
                step = max(step or 0, live["step"])  # the trainer's last report is fresher than sealed rows
            v = TrialView(tid, t["status"], workload=t.get("workload"), weight_decay=t.get("weight_decay"),
                          seed=t.get("seed"), step=step, max_steps=_target(config, run["grok_step"]),
                          test_acc=_finite(run["_acc"]), g23=_finite(run["_g23"]), gap_ratio=_finite(run["_r"]),
                          memo_step=run["memorization_step"], grok_step=run["grok_step"],
                          alarm_step=run["alarm_step"])
            if run.get("status") == INCOMPLETE:
                self.incomplete[tid] = run.get("error") or "stored data incomplete"
                if v.status in FINISHED + ("failed",):
                    v.status = DAMAGED  # its rows cannot be its whole record (a running one stays running)
            v.steps_per_s = self._rate(v, extra.get(tid, {}), live, now)
            if v.status == "running" and v.steps_per_s and v.max_steps is not None and v.step is not None:
                v.eta_s = max(0, v.max_steps - v.step) / v.steps_per_s
            out[tid] = v
        return out

    def _rate(self, v: TrialView, extra: dict, live: dict, now: float) -> float | None:
        if v.final:
            wall = _finite(extra.get("wall_s"))
            return v.step / wall if wall and v.step else None
        if v.status != "running" or v.step is None:
            return None
        if live.get("steps_per_s"):
            return live["steps_per_s"]  # measured by the trainer itself
        first = self._first_seen.setdefault(v.trial_id, (v.step, now))
        changed = self._changed.get(v.trial_id)
        if changed is None or changed[0] != v.step:
            self._changed[v.trial_id] = changed = (v.step, now)
        if changed[0] > first[0] and changed[1] > first[1]:
            return (changed[0] - first[0]) / (changed[1] - first[1])  # between seals seen here
        started = extra.get("started_at")
        if started is not None:  # before a second seal: the average since the attempt started
            elapsed = first[1] - started.timestamp()
            return v.step / elapsed if elapsed > 0 else None
        return None


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------

COLUMNS = ("trial", "status", "step", "steps/s", "test acc", "g23", "R", "memorised", "grok", "alarm", "ETA")


def _dur(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def cells(t: TrialView) -> list[str]:
    step = "—" if t.step is None else (f"{t.step:,}" + (f"/{t.max_steps:,}" if t.max_steps else ""))
    return [t.trial_id, t.status, step, _num(t.steps_per_s, ",.1f"), _num(t.test_acc, ".3f"),
            _num(t.g23, ".3g"), _num(t.gap_ratio, ".3g"), _num(t.memo_step, "d"), _num(t.grok_step, "d"),
            _num(t.alarm_step, "d"), _dur(t.eta_s) if not t.final else ""]


def summary_line(v: SweepView) -> str:
    c = v.counts
    done = sum(n for s, n in c.items() if s in FINAL)
    # every planned trial is shown (pending until it writes), so the trials shown are at least
    # the plan; more when rows exist that the plan does not list (a stale or foreign _spec.json)
    total = max(v.planned or 0, len(v.trials))
    others = ", ".join(f"{n} {s}" for s, n in sorted(c.items()) if s not in FINAL)
    bad = ", ".join(f"{c[s]} {s}" for s in ("failed", DAMAGED) if c.get(s))
    groks = sum(t.grok_step is not None for t in v.trials)
    alarms = sum(t.alarm_step is not None for t in v.trials)
    eta = "finished" if v.finished else f"ETA ≤ {_dur(v.eta_s)}"
    return (f"{v.sweep}: {done}/{total} done" + (f" ({bad})" if bad else "")
            + (f", {others}" if others else "") + f" | {v.throughput:,.0f} steps/s | groks {groks}, "
            f"alarms {alarms} | {eta}")


def plain_table(v: SweepView, rows: list[TrialView] | None = None) -> str:
    rows = v.trials if rows is None else rows
    table = [list(COLUMNS)] + [cells(t) for t in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in table]
    return "\n".join(lines)


def rich_view(v: SweepView, max_rows: int):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"edgesweep status — {v.uri}  ({time.strftime('%H:%M:%S', time.localtime(v.taken_at))})",
                  title_justify="left", expand=False, pad_edge=False)
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    style = {"running": "bold", "completed": "green", "stopped": "green", "failed": "red", DAMAGED: "red",
             "diverged": "red", "interrupted": "yellow", "pending": "dim"}
    shown = v.trials[:max_rows]
    for t in shown:
        table.add_row(*cells(t), style=style.get(t.status))
    parts = [Text(summary_line(v), style="bold"), table]
    if len(v.trials) > len(shown):
        parts.append(Text(f"… {len(v.trials) - len(shown)} more trials (edgesweep status without a terminal lists all)",
                          style="dim"))
    parts += [Text(n, style="yellow") for n in v.notes]
    return Group(*parts)


class _PlainStream:
    """Log-friendly output: a summary line per refresh, a line per trial that changed."""

    def __init__(self, out):
        self.out, self.last = out, {}

    def update(self, v: SweepView) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(v.taken_at))
        changed = [t for t in v.trials if self.last.get(t.trial_id) != cells(t)]
        print(f"[{stamp}] {summary_line(v)}", file=self.out)
        if changed:
            text = plain_table(v, changed).splitlines()[1:]  # widths of these rows; no header
            for line in text:
                print("  " + line, file=self.out)
        for n in v.notes:
            if n not in self.last.get("_notes", ()):
                print(f"  note: {n}", file=self.out)
        self.last = {t.trial_id: cells(t) for t in v.trials}
        self.last["_notes"] = list(v.notes)
        self.out.flush()


def _final(v: SweepView, out) -> None:
    print(summary_line(v), file=out)
    print(plain_table(v), file=out)
    for n in v.notes:
        print(f"note: {n}", file=out)
    out.flush()


def _started_without_rows(path: str) -> str | None:
    """What to say of a sweep folder whose driver has written its record but no trial has
    stored a row yet (the first seconds of a sweep), or None when ``path`` is no such folder."""
    try:
        sp = SweepPath.parse(path)
        driver = read_driver_record(sp)
    except StorageError:
        return None
    if driver is None:
        return None
    gone = driver_gone(driver)
    state = (f"{gone}, before any trial stored a row" if gone else
             f"its driver (pid {driver.pid} on {driver.hostname}) started {driver.started_at}; "
             "no trial has stored a row yet (`--watch` waits for them)")
    return f"sweep {sp.sweep} at {sp.uri}: {state}"


def status_main(path: str, watch: bool = False, interval: float = 5.0, plain: bool = False, out=None) -> int:
    """``edgesweep status``: 0 when shown (a finished sweep, or one look without --watch);
    with ``--watch``, 1 when the watch stopped on a sweep that cannot finish without a new
    driver (its driver is gone); 2 when there is no sweep at ``path``."""
    out = out or sys.stdout
    waiting = False
    while True:
        try:
            watcher = SweepWatcher(path)
            view = watcher.poll()
            break
        except StorageError as exc:
            if not watch:
                started = _started_without_rows(path)
                if started is not None:
                    print(started, file=out)
                    return 0
                print(f"edgesweep status: error: {exc}", file=sys.stderr)
                return 2
            if not waiting:  # a sweep submitted as a job may not have written anything yet
                print(f"edgesweep status: {exc}; waiting for it to start (Ctrl-C to stop; a job that failed "
                      "before its driver wrote anything leaves nothing here: `ray job logs JOB_ID` says why)",
                      file=out, flush=True)
                waiting = True
            time.sleep(interval)
    if not watch or view.finished or view.stalled:
        _final(view, out)
        if watch:
            return _stalled(view, out)
        if view.stalled:  # one look: the same news, without the watch's exit status
            left = sum(1 for t in view.trials if not t.done)
            print(f"note: {view.driver_gone}, and {left} trial(s) are not finished: nothing is running them; "
                  f"{resume_hint(view)}", file=out)
        return 0
    tty = out.isatty() and not plain
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        Live = None
    if tty and Live is not None:
        console = Console(file=out)
        rows = max(5, console.size.height - 8)
        with Live(rich_view(view, rows), console=console, auto_refresh=False, transient=True) as live:
            while not (view.finished or view.stalled):
                time.sleep(interval)
                view = _poll_or_keep(watcher, view)
                live.update(rich_view(view, max(5, console.size.height - 8)), refresh=True)
    else:
        stream = _PlainStream(out)
        redraw = tty  # a terminal without rich: redraw the table in place with ANSI codes
        while True:
            if redraw:
                out.write("\x1b[H\x1b[2J" + summary_line(view) + "\n" + plain_table(view) + "\n")
                out.flush()
            else:
                stream.update(view)
            if view.finished or view.stalled:
                break
            time.sleep(interval)
            view = _poll_or_keep(watcher, view)
    _final(view, out)
    return _stalled(view, out)


def resume_hint(view: SweepView) -> str:
    """How to continue a stalled sweep: its spec with --resume, and --storage set to the root
    the sweep lies in (status knows the root, not which spec file started it, nor whether that
    spec's own storage points here: a sweep moved, or started with --storage, needs it)."""
    root = view.uri.rsplit("/", 1)[0] or "/"
    command = f"`edgesweep run SPEC.yaml --resume --storage {shlex.quote(root)}`"
    spec = f"(SPEC.yaml: the spec sweep {view.sweep!r} was started with)"
    try:
        sp = SweepPath.parse(view.uri)
        exp_path = sp.file("_tune")
        if sp.root.exists(exp_path) and not has_experiment_state(sp.root, exp_path):
            why = f"but {sp.root.display(exp_path)} holds no experiment state"
        else:
            problem = tune_state_problem(sp.root, exp_path)
            why = f"but Tune's state {sp.root.display(problem.path)} {problem.why}" if problem else None
    except (OSError, StorageError, ValueError):
        why = None
    if why is not None:
        return f"{why}: {command} cannot continue it as it is, and says what can still be done {spec}"
    return f"{command} continues it {spec}"


def _stalled(view: SweepView, out) -> int:
    """The end of a watch: 0 for a finished sweep; 1, with what to do, for a stalled one."""
    if not view.stalled:
        return 0
    left = sum(1 for t in view.trials if not t.done)
    print(f"stopped watching: {view.driver_gone}, and {left} trial(s) are not finished; {resume_hint(view)}",
          file=out)
    out.flush()
    return 1


def _poll_or_keep(watcher: SweepWatcher, view: SweepView) -> SweepView:
    """A refresh; on a read error (a part compacted away between listing and reading, a
    network blip on S3) the previous view with a note, and the next refresh tries again."""
    try:
        return watcher.poll()
    except (StorageError, OSError, pl.exceptions.PolarsError) as exc:
        view.notes = [f"refresh failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); retrying"]
        return view

