"""Reading tables back: :func:`scan` returns a deduplicated Polars LazyFrame.

What a scan does, in order:

1. Finds the sweeps. ``root`` is either one sweep's folder (it has a table directory such as
   ``features/``) or a folder of sweeps; the ``sweep`` column is the folder name.
2. Lists the table's files itself (not by glob) and sorts them out: hidden names (in-flight
   ``.…tmp-…`` files of live or killed writers) are ignored; every other file must sit at its
   layout position with a valid name, open as Parquet, carry edgesweep metadata for this table,
   have compatible column types, and match its partition directory. A file that fails is
   *reported by path* — a :class:`StorageError` listing every bad file by default, or one
   :class:`StorageWarning` per file and the file left out with ``on_error="skip"``. It is never
   read silently. (This reads each file's footer: a few KB per file, in parallel threads.)
3. Drops files a compacted file supersedes (:func:`.layout.live_parts`), and marks the live
   files whose step range (from the name, checked against the row-group statistics) meets
   another live file of the same trial: only those can hold duplicate rows.
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
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import StorageError, StorageWarning
from .fs import Root, resolve_root
from .layout import (PartName, is_hidden, live_parts, parse_part_name, parse_partition_dirs,
                     parse_trial_file_name)
from .schema import (DEDUPE_KEYS, PARTITION_KEYS, PARTITIONED, STREAMED, TABLES, check_table,
                     compatible, read_file_metadata, type_problems, union_schema)

ON_ERROR = ("raise", "skip")


@dataclass
class _File:
    sweep: str
    path: str
    group: tuple                 # (sweep, partition dirs): where supersession is decided
    partition: dict | None = None
    part: PartName | None = None
    trial_id: str | None = None
    schema: pa.Schema | None = None       # columns only (file metadata removed)
    steps: tuple[int, int] | None = None   # min/max step from row-group statistics
    overlaps: bool = True                  # may share (trial_id, step) with another file


def scan(root, table: str, on_error: str = "raise") -> pl.LazyFrame:
    """A LazyFrame over `table` of every sweep under `root` (or of the one sweep `root` is).

    Free of duplicate (trial_id, step) rows (newest attempt kept) and of superseded parts;
    bad files raise :class:`StorageError` naming them (``on_error="raise"``) or are skipped
    with a :class:`StorageWarning` each (``on_error="skip"``). A missing root or an unknown
    table always raises. See the module docstring for what pushes down.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    check_table(table)
    r = resolve_root(root)
    files, bad = find_files(r, table)
    bad += _type_conflicts(table, files)
    if bad:
        _report(r, table, bad, on_error)
        bad_paths = {p for p, _ in bad}
        files = [f for f in files if f.path not in bad_paths]
    schema = union_schema(table, _distinct(f.schema for f in files))
    files = _live(files, table)
    return _frame(r, table, files, schema)


def sweep_dirs(r: Root) -> list[tuple[str, str]]:
    """(sweep name, directory) pairs under a root; the root itself when it is a sweep folder."""
    info = r.info(r.base)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"storage root not found: {r.display(r.base)}", r.display(r.base))
    if info.type != pafs.FileType.Directory:
        raise StorageError(f"storage root is not a directory: {r.display(r.base)}",
                           r.display(r.base))
    children = [c for c in r.list_dirs(r.base) if not is_hidden(c)]
    if any(c in TABLES for c in children):
        name = r.base.rstrip("/").rpartition("/")[2]
        return [(name, r.base)]
    return [(c, r.path(c)) for c in children]


def find_files(r: Root, table: str) -> tuple[list[_File], list[tuple[str, str]]]:
    """Candidate files of `table` (footers read) and (path, reason) of the bad ones."""
    files, bad = [], []
    for sweep, sdir in sweep_dirs(r):
        tdir = f"{sdir.rstrip('/')}/{table}"
        for info in r.list_files(tdir):
            rel = info.path[len(tdir) + 1:].split("/")
            if any(is_hidden(p) for p in rel):
                continue  # in-flight temp files; never data
            f, reason = _classify(sweep, info.path, rel, table)
            if reason:
                bad.append((info.path, reason))
            else:
                files.append(f)
    _read_footers(r, table, files, bad)
    bad_paths = {p for p, _ in bad}
    return [f for f in files if f.path not in bad_paths], bad


def _classify(sweep: str, path: str, rel: list[str], table: str) -> tuple[_File | None, str | None]:
    name = rel[-1]
    if not name.endswith(".parquet"):
        return None, "unexpected file (not a .parquet file) in a table directory"
    if table not in PARTITIONED:
        if len(rel) != 1:
            return None, f"unexpected location: {table} files sit directly in {table}/"
        return _File(sweep, path, (sweep,)), None
    layout = "workload=…/optimizer=…/weight_decay=…/<file>"
    if len(rel) != len(PARTITION_KEYS) + 1:
        return None, f"unexpected location: {table} files sit at {table}/{layout}"
    partition = parse_partition_dirs(rel[:-1])
    if partition is None:
        return None, f"bad partition directories {'/'.join(rel[:-1])!r} (expected {layout}, " \
                     f"weight_decay as a canonical float such as 1.0)"
    f = _File(sweep, path, (sweep, *rel[:-1]), partition)
    if table in STREAMED:
        f.part = parse_part_name(name)
        if f.part is None:
            return None, "unexpected file name (expected <trial>.a<attempt>.s<lo>-<hi>.parquet " \
                         "or <trial>.c<attempt>.s<lo>-<hi>.parquet)"
        f.trial_id = f.part.trial_id
    else:
        f.trial_id = parse_trial_file_name(name)
        if f.trial_id is None:
            return None, "unexpected file name (expected <trial_id>.parquet)"
    return f, None


def _read_footers(r: Root, table: str, files: list[_File], bad: list) -> None:
    def read(chunk: list[_File]) -> list:
        out = []
        for f in chunk:
            try:
                out.append(pq.read_metadata(f.path, filesystem=r.fs))
            except (OSError, pa.ArrowException, ValueError) as exc:
                out.append(exc)
        return out

    # Footer reads release the GIL; on S3 each is a round trip, so use more threads there.
    # Strided chunks, one per thread: a future per file costs more than a local footer read.
    workers = min(16 if r.is_s3 else 4, max(1, len(files)))
    chunks = [files[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_chunk = list(pool.map(read, chunks))
    results = [None] * len(files)
    for i, chunk_results in enumerate(per_chunk):
        results[i::workers] = chunk_results
    distinct: list[tuple[pa.Schema, list[str]]] = []  # most files share one schema
    for f, res in zip(files, results):
        if isinstance(res, BaseException):
            bad.append((f.path, f"unreadable Parquet file ({type(res).__name__}: {res})"))
            continue
        try:
            schema = res.schema.to_arrow_schema()
        except (pa.ArrowException, ValueError) as exc:
            bad.append((f.path, f"unreadable Parquet schema ({exc})"))
            continue
        # Check each distinct column set once; files share the checked instance (interning),
        # so later steps can compare schemas by identity.
        columns, problems = next(((c, p) for c, p in distinct if c.equals(schema)), (None, None))
        if columns is None:
            columns = schema.remove_metadata()
            problems = type_problems(table, columns)
            distinct.append((columns, problems))
        reason = _check_file(table, f, schema, problems)
        if reason is None and f.part is not None:
            f.steps = _step_range(res)
            if f.steps is not None and not (f.part.lo <= f.steps[0] and f.steps[1] <= f.part.hi):
                reason = (f"steps {f.steps[0]}..{f.steps[1]} in the file lie outside the range "
                          f"{f.part.lo}..{f.part.hi} its name claims")
        if reason:
            bad.append((f.path, reason))
        else:
            f.schema = columns


def _distinct(schemas) -> list[pa.Schema]:
    """Distinct (interned) schema objects, in first-seen order."""
    return list({id(s): s for s in schemas}.values())


def _step_range(md: pq.FileMetaData) -> tuple[int, int] | None:
    """(min, max) of the step column from row-group statistics; None if any are missing."""
    lo = hi = None
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.num_rows == 0:
            continue
        col = next((rg.column(j) for j in range(rg.num_columns)
                    if rg.column(j).path_in_schema == "step"), None)
        st = col.statistics if col is not None else None
        if st is None or not st.has_min_max or st.null_count:
            return None
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return None if lo is None else (lo, hi)


def _check_file(table: str, f: _File, schema: pa.Schema, problems: list[str]) -> str | None:
    meta = read_file_metadata(schema)
    if meta is None:
        return "foreign Parquet file: no edgesweep metadata (not written by edgesweep)"
    if meta.get("table") != table:
        return f"file of table {meta.get('table')!r} found in the {table!r} directory"
    if problems:
        return f"wrong schema for {table}: {'; '.join(problems)}"
    if f.partition is not None:
        stored = meta.get("partition")
        if not isinstance(stored, dict) or any(stored.get(k) != f.partition[k] for k in PARTITION_KEYS):
            return f"partition metadata {stored} does not match its directory {f.partition}"
    if f.trial_id is not None and meta.get("trial_id") != f.trial_id:
        return f"trial_id {meta.get('trial_id')!r} in metadata does not match the file name"
    if f.part is not None and meta.get("attempt") != f.part.attempt:
        return f"attempt {meta.get('attempt')!r} in metadata does not match the file name"
    return None


def _type_conflicts(table: str, files: list[_File]) -> list[tuple[str, str]]:
    """Files whose column type disagrees with the union schema (first type seen wins)."""
    distinct = _distinct(f.schema for f in files)
    schema = union_schema(table, distinct)
    reason_of = {}
    for columns in distinct:
        for field in columns:
            want = schema.field(field.name).type
            if not compatible(field.type, want):
                reason_of[id(columns)] = f"column {field.name!r} is {field.type}, other files have {want}"
                break
    return [(f.path, reason_of[id(f.schema)]) for f in files if id(f.schema) in reason_of]


def _report(r: Root, table: str, bad: list[tuple[str, str]], on_error: str) -> None:
    if on_error == "skip":
        for path, reason in bad:
            warnings.warn(f"skipping {r.display(path)}: {reason}", StorageWarning, stacklevel=3)
        return
    shown = "\n".join(f"  {r.display(p)}: {why}" for p, why in bad[:20])
    more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
    noun = "file" if len(bad) == 1 else "files"
    raise StorageError(
        f"{len(bad)} bad {noun} in table {table!r} under {r.display(r.base)}:\n{shown}{more}\n"
        f"(nothing was read; pass on_error='skip' to read the other files and skip these)",
        [r.display(p) for p, _ in bad])


def _live(files: list[_File], table: str) -> list[_File]:
    """Drop superseded files; mark which live files may hold duplicate (trial_id, step) rows.

    A file's rows are unique by step (the writer enforces increasing steps, compaction
    dedupes). Rows of two files can only collide when both belong to the same (sweep, trial)
    and their step ranges — from the name, checked against the row-group statistics —
    intersect. Only such files need the dedupe; after compaction, and in sweeps without
    restores, that is none, and every predicate reaches the Parquet scan.
    """
    if table not in STREAMED:
        return files
    groups: dict[tuple, list[_File]] = {}
    for f in files:
        groups.setdefault(f.group, []).append(f)
    out = []
    for group in groups.values():
        live = live_parts([f.part for f in group])
        out.extend(f for f in group if f.part in live)
    by_trial: dict[tuple, list[_File]] = {}
    for f in out:
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
    return sorted(out, key=lambda f: f.path)


def _polars_schema(schema: pa.Schema) -> pl.Schema:
    return pl.from_arrow(schema.empty_table()).schema


def _frame(r: Root, table: str, files: list[_File], schema: pa.Schema) -> pl.LazyFrame:
    pl_schema = _polars_schema(schema)
    columns = ["sweep"] + [c for c in pl_schema.names() if c != "sweep"]

    def scan_files(sweep: str, group: list[_File]) -> pl.LazyFrame:
        lf = pl.scan_parquet([r.uri(f.path) for f in group], schema=pl_schema,
                             missing_columns="insert", extra_columns="raise",
                             hive_partitioning=False, glob=False,
                             storage_options=r.storage_options)
        return lf.with_columns(pl.lit(sweep, dtype=pl.String).alias("sweep")).select(columns)

    keys = DEDUPE_KEYS.get(table)
    clean: dict[str, list[_File]] = {}
    dirty: dict[str, list[_File]] = {}
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
