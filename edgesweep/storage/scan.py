"""Reading tables back: :func:`scan` returns a deduplicated Polars LazyFrame.

What a scan does, in order:

1. Finds the sweeps. ``root`` is either one sweep's folder (it has a table directory such as
   ``features/``) or a folder of sweeps; the ``sweep`` column is the folder name.
2. Inspects the table's files (:func:`.checks.inspect_table`): lists them itself (not by
   glob), ignores hidden names (in-flight ``.…tmp-…`` files of live or killed writers) and
   files a compacted file supersedes, and checks every other file against its sealed-file
   record (:mod:`.records`) — present, of the sealed size, the sealed sha256 (one read of
   the file: Polars does not verify Parquet page checksums, see :mod:`.checks`), the sealed
   row count — and by its footer: at its layout position with a valid name, edgesweep
   metadata for this table, compatible column types, its partition directory. Recorded files
   that are gone are found too. A file that fails is *reported by path* — a
   :class:`StorageError` listing every bad file by default, or one :class:`StorageWarning`
   per file and the file left out with ``on_error="skip"``. It is never read silently.
   ``verify_content=False`` skips the hash (the other checks cost only listings, the records
   and a footer read per file).
3. Marks the files whose step range (from the name, checked against the row-group
   statistics) meets another file of the same trial: only those can hold duplicate rows.
4. Scans with ``polars.scan_parquet`` over explicit file lists with the union schema: columns
   an older file lacks come back null, columns are typed as declared.
5. Deduplicates the marked files only: for ``features``/``evals`` one row per
   (sweep, trial_id, step) — the newest attempt's; for ``trials`` one row per
   (sweep, trial_id), newest attempt, always (a tiny table).

The dedupe is a window ``attempt == max(attempt) over key`` followed by ``unique(key)``.
Polars pushes predicates on the key columns (sweep, trial_id, step) below it into the Parquet
scan; predicates on other columns stay above it, as they must — filtering first could bring
back a row that an older attempt wrote. The unmarked files (all of them after compaction, and
in a sweep without restores) are a plain scan: every predicate and projection reaches the
Parquet reader and its row-group statistics. Row order is unspecified; sort when it matters.

The checks happen when ``scan()`` is called; the returned LazyFrame reads the same files
when collected. A file that changes in between (a live sweep compacting a finished trial
removes its parts) fails the collect with Polars' "file not found": scan again.
"""

from __future__ import annotations

import warnings

import polars as pl
import pyarrow as pa

from .checks import Inspection, Problem, StoredFile, inspect_table, sweep_dirs
from .errors import StorageError, StorageWarning
from .fs import Root, resolve_root
from .schema import DEDUPE_KEYS, DERIVED, STREAMED, check_table, union_schema

__all__ = ["scan", "scan_inspected", "sweep_dirs", "ON_ERROR"]

ON_ERROR = ("raise", "skip")


def scan(root, table: str, on_error: str = "raise", *, verify_content: bool = True) -> pl.LazyFrame:
    """A LazyFrame over `table` of every sweep under `root` (or of the one sweep `root` is).

    Free of duplicate (trial_id, step) rows (newest attempt kept) and of superseded parts;
    bad files — missing, truncated, corrupt, unrecorded, foreign — raise :class:`StorageError`
    naming them (``on_error="raise"``) or are skipped with a :class:`StorageWarning` each
    (``on_error="skip"``). A missing root or an unknown table always raises. See the module
    docstring for what is checked and what pushes down.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    check_table(table)
    r = resolve_root(root)
    return scan_inspected(r, table, inspect_table(r, table, sweep_dirs(r), content=verify_content), on_error)


def scan_inspected(r: Root, table: str, insp: Inspection, on_error: str = "raise") -> pl.LazyFrame:
    """:func:`scan` of a table already inspected (a caller that also wants the files' schemas)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if insp.damage:
        _report(r, table, insp.damage, on_error)
    files = insp.files
    schema = union_schema(table, list({id(f.schema): f.schema for f in files}.values()))
    return _frame(r, table, _mark_overlaps(files, table), schema)


def _report(r: Root, table: str, bad: list[Problem], on_error: str) -> None:
    if on_error == "skip":
        for p in bad:
            warnings.warn(StorageWarning(f"skipping {p.line()}", trial_id=p.trial_id), stacklevel=3)
        return
    shown = "\n".join(f"  {p.line()}" for p in bad[:20])
    more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
    noun = "file" if len(bad) == 1 else "files"
    if table in DERIVED:  # computed from the other tables: rewriting it is the fix, not skipping
        hint = (f"(nothing was read; this table is computed from the others: `edgesweep "
                f"{'detect' if table == 'detection' else 'aggregate'} ROOT/SWEEP` writes it again)")
    else:
        hint = ("(nothing was read; to read the other files and skip these: `edgesweep query "
                "--skip-bad-files`, or on_error='skip' in Python)")
    raise StorageError(f"{len(bad)} bad {noun} in table {table!r} under {r.display(r.base)}:\n{shown}{more}\n{hint}",
                       [p.path for p in bad])


def _mark_overlaps(files: list[StoredFile], table: str) -> list[StoredFile]:
    """Mark which files may hold duplicate (trial_id, step) rows (superseded files are gone).

    A file's rows are unique by step (the writer enforces increasing steps, compaction
    dedupes). Rows of two files can only collide when both belong to the same (sweep, trial)
    and their step ranges — from the name, checked against the row-group statistics —
    intersect. Only such files need the dedupe; after compaction, and in sweeps without
    restores, that is none, and every predicate reaches the Parquet scan.
    """
    if table not in STREAMED:
        return files
    by_trial: dict[tuple, list[StoredFile]] = {}
    for f in files:
        by_trial.setdefault((f.sweep, f.trial_id), []).append(f)
    for trial_files in by_trial.values():
        # Sorted by lo, a file meets an earlier one iff its lo ≤ the largest earlier hi, and a
        # later one iff the next file's lo ≤ its hi.
        trial_files.sort(key=lambda f: (f.part.lo, f.part.hi))
        max_hi = None
        for i, f in enumerate(trial_files):
            nxt = trial_files[i + 1] if i + 1 < len(trial_files) else None
            f.overlaps = (f.steps is None  # without statistics: assume the worst
                          or (max_hi is not None and f.part.lo <= max_hi)
                          or (nxt is not None and nxt.part.lo <= f.part.hi))
            max_hi = f.part.hi if max_hi is None else max(max_hi, f.part.hi)
    return sorted(files, key=lambda f: f.path)


def _polars_schema(schema: pa.Schema) -> pl.Schema:
    return pl.from_arrow(schema.empty_table()).schema


def _frame(r: Root, table: str, files: list[StoredFile], schema: pa.Schema) -> pl.LazyFrame:
    pl_schema = _polars_schema(schema)
    columns = ["sweep"] + [c for c in pl_schema.names() if c != "sweep"]

    def scan_files(sweep: str, group: list[StoredFile]) -> pl.LazyFrame:
        lf = pl.scan_parquet([r.uri(f.path) for f in group], schema=pl_schema,
                             missing_columns="insert", extra_columns="raise",
                             hive_partitioning=False, glob=False,
                             storage_options=r.storage_options)
        return lf.with_columns(pl.lit(sweep, dtype=pl.String).alias("sweep")).select(columns)

    keys = DEDUPE_KEYS.get(table)
    clean: dict[str, list[StoredFile]] = {}
    dirty: dict[str, list[StoredFile]] = {}
    for f in files:
        needs_dedupe = keys is not None and (f.overlaps or table not in STREAMED)
        (dirty if needs_dedupe else clean).setdefault(f.sweep, []).append(f)
    frames = [scan_files(sw, group) for sw, group in sorted(clean.items())]
    if dirty:
        lf = pl.concat([scan_files(sw, group) for sw, group in sorted(dirty.items())], how="vertical")
        attempt = pl.col("attempt").fill_null(-1)
        frames.append(lf.filter(attempt == attempt.max().over(list(keys)))
                        .unique(subset=list(keys), keep="any"))
    if not frames:
        empty = pl.LazyFrame(schema=pl_schema)
        return empty.with_columns(pl.lit(None, dtype=pl.String).alias("sweep")).select(columns)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
