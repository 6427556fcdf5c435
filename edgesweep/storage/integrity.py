"""Integrity of stored results: :func:`check_sweep`, :func:`verify` and ``edgesweep verify``.

Every Parquet file edgesweep writes carries page checksums and is listed in a sealed-file
record (:mod:`.records`); :func:`.checks.inspect_table` checks files against both. This module
runs that inspection over whole sweeps and roots and reports per trial, so that an aggregation
can keep damaged trials out of its counts::

    report = check_sweep(root, "grokking")
    report.ok                      # no damage anywhere in the sweep
    report.damaged_trials()        # {"mod_add-adamw-wd1.0-s42", …}: mark them incomplete
    for p in report.problems:      # each names one file
        print(p.line())            # "<path>: missing: sealed (20 rows, steps 0..950, …) but not found"

    scan(root, "features", on_error="skip")   # the other trials, bad files left out (warned)

Kinds of problems (:data:`.checks.DAMAGE` and the rest):

* ``missing`` — a record lists a sealed file that is not there, or (:func:`verify` and
  :func:`check_sweep`, by the rule of :mod:`.completeness`) a completed or stopped trial's
  evaluations end before the step its trials row records or its features before its last
  snapshot, or — in a sweep the driver ran — a trial has rows but no trials row: rows gone
  together with their seal record or their table folder, or never recorded (legacy);
* ``truncated`` — the file is shorter than sealed;
* ``corrupt`` — other bytes than sealed (sha256), unreadable (Thrift, page checksum), other row
  count, or a damaged record file;
* ``unreadable`` — the file cannot be read for a reason other than its bytes (no permission),
  or a folder cannot be listed (its files are then not checked, nor called missing; the
  aggregation refuses the sweep, not knowing which trials it holds): fix access, do not delete it;
* ``unrecorded`` — a file no record lists, in a trial that keeps records (stray, foreign copy,
  or a lost record);
* ``invalid`` — misplaced, misnamed, foreign, wrong schema;
* ``legacy`` (warning) — written before records existed: readable, not checkable;
* ``interrupted`` (note) — a seal that never completed, whose rows the writer never
  acknowledged (a new attempt replays them).

:func:`verify` does the same for every sweep and table under a root and also decodes every
file with page-checksum verification (``deep``); :func:`verify_main` is the command
(``edgesweep verify ROOT``): one line per problem, a summary, exit status 1 on any damage.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field

import polars as pl
import pyarrow.fs as pafs

from .arguments import path_argument
from .checks import DAMAGE, NOTE, WARNING, Problem, inspect_table, one_level_too_deep, sweep_dirs, unlisted_folders
from .completeness import shortfall, snapshot_every
from .errors import StorageError, StorageWarning
from .fs import resolve_root
from .layout import check_name, table_dir
from .scan import scan
from .schema import PARTITION_KEYS, TABLES

__all__ = ["IntegrityReport", "Problem", "check_sweep", "verify", "verify_main"]


@dataclass
class IntegrityReport:
    """What :func:`check_sweep` / :func:`verify` found: problems (each naming a file) and
    what was checked."""

    root: str
    sweeps: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0          # data files checked
    records: int = 0        # record files read
    seconds: float = 0.0

    @property
    def damage(self) -> list[Problem]:
        return [p for p in self.problems if p.damage]

    @property
    def ok(self) -> bool:
        """No damage (warnings and notes allowed)."""
        return not self.damage

    def damaged_trials(self, sweep: str | None = None) -> set[str]:
        """Trial ids with any damaged file (of `sweep`, or of every sweep checked)."""
        return {p.trial_id for p in self.damage
                if p.trial_id is not None and (sweep is None or p.sweep == sweep)}

    def by_trial(self) -> dict[tuple[str, str | None], list[Problem]]:
        """Problems per (sweep, trial_id); trial_id None for files of no trial."""
        out: dict[tuple[str, str | None], list[Problem]] = {}
        for p in self.problems:
            out.setdefault((p.sweep, p.trial_id), []).append(p)
        return out

    def summary(self) -> str:
        counts = {k: sum(p.kind == k for p in self.problems) for k in DAMAGE + WARNING + NOTE}
        found = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no problems"
        trials = self.damaged_trials()
        damaged = (f"; {len(trials)} trial{'s' if len(trials) != 1 else ''} damaged"
                   if trials else "")
        unsealed = (f" — {counts['legacy']} of the files have no seal record, so a change inside "
                    "them cannot be detected" if counts.get("legacy") else "")
        return (f"{'OK' if self.ok else 'DAMAGED'}: {self.files} files and {self.records} "
                f"records in {len(self.sweeps)} sweep{'s' if len(self.sweeps) != 1 else ''} "
                f"checked in {self.seconds:.1f} s: {found}{damaged}{unsealed}")


def check_sweep(root, sweep: str, *, tables=TABLES, deep: bool = False) -> IntegrityReport:
    """Check every file of one sweep (all `tables`) against its records and footer, and the
    sha256 of its bytes; ``deep`` also decodes every page with checksum verification. A
    missing root or sweep raises :class:`StorageError`; damage is reported, never raised."""
    r = resolve_root(root)
    check_name("sweep", sweep)
    sdir = r.path(sweep)
    if not r.is_dir(sdir):
        raise StorageError(f"sweep not found: {r.display(sdir)}", r.display(sdir))
    return _check(r, [(sweep, sdir)], tables, deep)


def verify(root, *, deep: bool = True) -> IntegrityReport:
    """Check every sweep and table under `root` (a root of sweeps, or one sweep folder)."""
    r = resolve_root(root)
    return _check(r, sweep_dirs(r), TABLES, deep)


def _check(r, sweeps: list[tuple[str, str]], tables, deep: bool) -> IntegrityReport:
    t0 = time.perf_counter()
    report = IntegrityReport(r.display(r.base), [s for s, _ in sweeps])
    for table in tables:
        insp = inspect_table(r, table, sweeps, content=True, deep=deep)
        report.problems += insp.problems
        report.files += insp.checked
        report.records += insp.records
    if "trials" in tables and "evals" in tables:
        damaged = report.damaged_trials()
        # Rows in a folder that cannot be listed are unchecked, not missing.
        unlisted = tuple(p.path for p in unlisted_folders(report.problems))
        for sweep, sdir in sweeps:
            report.problems += _short_trials(r, sweep, sdir, damaged, unlisted)
    order = {k: i for i, k in enumerate(DAMAGE + WARNING + NOTE)}
    report.problems.sort(key=lambda p: (order[p.kind], p.sweep, p.trial_id or "", p.path))
    report.seconds = time.perf_counter() - t0
    return report


#: What the driver writes into a sweep folder before any trial starts.
DRIVER_FILES = ("_driver.json", "_spec.json", "_tune")


def _short_trials(r, sweep: str, sdir: str, damaged: set[str], unlisted: tuple[str, ...] = ()) -> list[Problem]:
    """Finished trials whose evaluations or features end before the step their trials row
    records (:func:`.completeness.shortfall`): data gone with its seal record, a deleted table
    folder, or rows written before records existed (``legacy``). No file check can see it; the
    aggregation does (``analysis.record``), and so must ``verify``. Nothing is said of rows that
    may lie in an ``unlisted`` folder (one that could not be listed, reported as unreadable)."""
    def may_hide(where: str) -> bool:
        return any(_within(where, u) for u in unlisted)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StorageWarning)  # damaged files are reported already
        try:
            # Trials, rows, trials again — each rule against the read that makes it race-free
            # on a live sweep: a trials row is written before a trial's first rows and after its
            # last ones, so a finished row read *before* the rows has all of them behind it, and
            # rows read *before* the second read of trials have their trials row in it.
            trials = _trials(r, sdir)
            last = {t: _last_steps(r, sdir, t) for t in ("evals", "features")}
            last["nonfinite"] = _last_steps(r, sdir, "features", flag="nonfinite")
            known = set(_trials(r, sdir)["trial_id"])
        except (StorageError, pl.exceptions.PolarsError, OSError):
            return []  # a table unreadable as a whole: the file checks said why
    out = []
    # A trial run by the driver writes its trials row ("running") before any other row: rows
    # without one are a trials table that lost them (a part gone with its seal record, the
    # folder deleted). Sweeps written by other means (the storage layer alone) may have none.
    # A `runs` table that lists a trial with a status of its own (not "unknown") says the
    # same as the driver's files: that status came from a trials row, so the sweep had them
    # (a committed or copied sweep keeps its tables, not _tune).
    by_driver = (bool(known) or any(r.exists(f"{sdir.rstrip('/')}/{name}") for name in DRIVER_FILES)
                 or _runs_had_trials_rows(r, sdir))
    trials_dir = r.display(f"{sdir.rstrip('/')}/trials")
    trials_hidden = any(_within(trials_dir, u) or _within(u, trials_dir) for u in unlisted)
    for table in ("features", "evals") if by_driver and not trials_hidden else ():
        for tid in sorted(set(last[table]) - known - damaged):
            known.add(tid)  # one problem per trial
            where = r.display(f"{sdir.rstrip('/')}/trials")
            out.append(Problem("missing", where, f"trial {tid}: it has {table} rows but no trials row: the row is "
                               "gone with its seal record (or the whole table)", "trials", sweep, tid))
    for t in trials.iter_rows(named=True):
        tid = t["trial_id"]
        if tid in damaged:
            continue
        short = shortfall(t["status"], t["steps"], last["evals"].get(tid), last["features"].get(tid),
                          snapshot_every(t["config"]), last["nonfinite"].get(tid))
        if short is not None:
            table, why = short
            rel = table_dir(sweep, table, {k: t[k] for k in PARTITION_KEYS}).split("/", 1)[1]
            where = r.display(f"{sdir.rstrip('/')}/{rel}")
            if may_hide(where):
                continue
            out.append(Problem("missing", where, f"trial {tid}: {why}: rows are gone with their seal record "
                               "(or the whole table), or were written before records existed", table, sweep, tid))
    return out


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _trials(r, sdir: str) -> pl.DataFrame:
    # Here and in _last_steps: the bytes were hashed by the file checks just before, not again.
    columns = ("trial_id", "status", "steps", "config", *PARTITION_KEYS)
    if not r.exists(f"{sdir.rstrip('/')}/trials"):
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return scan(r.uri(sdir), "trials", on_error="skip", verify_content=False).select(columns).collect()


def _runs_had_trials_rows(r, sdir: str) -> bool:
    """Whether the sweep's ``runs`` table lists a trial whose status came from a trials row
    (anything but "unknown", the status of rows without one)."""
    if not r.exists(f"{sdir.rstrip('/')}/runs"):
        return False
    try:
        status = scan(r.uri(sdir), "runs", on_error="skip", verify_content=False).select("status").collect()
    except (StorageError, pl.exceptions.PolarsError, OSError):
        return False
    return bool(status.filter(pl.col("status").is_not_null() & (pl.col("status") != "unknown")).height)


def _last_steps(r, sdir: str, table: str, flag: str | None = None) -> dict[str, int]:
    """Each trial's last stored step in ``table`` (of its rows whose boolean column ``flag`` is
    true, when given); {} when the sweep has no such table or column."""
    if not r.exists(f"{sdir.rstrip('/')}/{table}"):
        return {}
    lazy = scan(r.uri(sdir), table, on_error="skip", verify_content=False)
    if flag is not None:
        if flag not in lazy.collect_schema().names():
            return {}
        lazy = lazy.filter(pl.col(flag).fill_null(False))
    return dict(lazy.group_by("trial_id").agg(pl.col("step").max()).collect().iter_rows())


def sweep_started(root: str) -> bool:
    """Whether ``root`` is (or directly holds) a sweep folder whose driver has started — its
    ``_driver.json`` or Tune's ``_tune/`` — but that has no stored files yet."""
    try:
        r = resolve_root(root)
        children = [r.base] + [i.path for i in r.fs.get_file_info(pafs.FileSelector(r.base))
                               if i.type == pafs.FileType.Directory]
        return any(r.fs.get_file_info(f"{c}/{name}").type != pafs.FileType.NotFound
                   for c in children for name in DRIVER_FILES)
    except (OSError, StorageError):
        return False


def verify_main(argv: list[str] | None = None) -> int:
    """``edgesweep verify ROOT``: exit 0 when nothing is damaged, 1 on damage, 2 when the
    root cannot be checked at all or holds nothing to check."""
    p = argparse.ArgumentParser(
        prog="edgesweep verify",
        description="Check every stored file under ROOT: present, complete and unchanged since "
                    "it was sealed (records, sha256, page checksums). One line per problem, "
                    "then a summary; exit status 1 on any damage.")
    p.add_argument("root", metavar="ROOT", type=path_argument,
                   help="storage root (path, file://, s3:// or gs:// URI), or one sweep's folder")
    p.add_argument("--quick", action="store_true",
                   help="skip decoding every page (records, sizes, footers and sha256 only)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print damage and the summary only (no warnings or notes)")
    args = p.parse_args(argv)
    try:
        report = verify(args.root, deep=not args.quick)
    except StorageError as exc:
        print(f"edgesweep verify: error: {exc}", file=sys.stderr)
        return 2
    # No data file and no record: nothing of edgesweep's here, at most files that are not data in
    # a folder named like a table (a report's figures/trials/ of PNGs).
    stray = [prob for prob in report.problems if prob.kind == "invalid"]
    if report.files == 0 and report.records == 0 and len(stray) == len(report.problems):
        if not stray and sweep_started(args.root):
            print(f"OK: nothing stored yet under {args.root} (a sweep that has not sealed any rows)")
            return 0
        # Nothing to check is not "OK": most likely the wrong folder level.
        others = (f" ({len(stray)} other file(s) in folders named like tables, such as {stray[0].path})"
                  if stray else "")
        print(f"edgesweep verify: error: {args.root}: no edgesweep files found in "
              f"{len(report.sweeps)} folder(s) checked{others} — give a storage root (its sweep folders hold "
              f"trials/, features/, …) or one sweep's folder{one_level_too_deep(resolve_root(args.root))}",
              file=sys.stderr)
        return 2
    for prob in report.problems:
        if prob.damage or not args.quiet:
            print(prob.line())
    print(report.summary())
    return 0 if report.ok else 1
