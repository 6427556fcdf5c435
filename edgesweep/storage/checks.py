"""Which stored files are good: the one inspection that scan, compaction and verification share.

For one table of one or more sweeps, :func:`inspect_table`

1. lists the table's files once and sorts them out by name and place (:mod:`.layout`):
   hidden names (in-flight temp files) are ignored; ``_sealed/`` folders hold the records
   (:mod:`.records`); every other file must sit at its layout position with a valid name;
2. drops files a compacted file supersedes (by name; they are never read, only deleted);
3. reads the records, and checks every remaining file against its entry: the size from the
   listing (free), the sha256 of its bytes (``content=True``: one full read of the file), the
   row count and step range from its footer; then, from the footer, that it is an edgesweep
   file of this table, of compatible column types, in the right partition. A file no record
   lists is *unrecorded* (damage) if its trial keeps records or the file names a record —
   else *legacy* (written before records existed: read, with a warning from verify);
4. reports every recorded file that should exist and does not (*missing*), unless a compacted
   file supersedes it (retired) or its seal never completed (an unacknowledged ``sealing``
   entry: a note);
5. with ``deep=True`` also decodes every file with pyarrow's page-checksum verification.

Every :class:`Problem` names one file (a path a user can paste) and says what is wrong. Damage
is ``missing``, ``truncated``, ``corrupt``, ``unrecorded`` and ``invalid`` (misplaced, foreign,
wrong schema); ``legacy`` is a warning and ``interrupted`` a note.

Why a hash of the bytes, and not Parquet's page checksums, on the Polars path: Polars 2.1 does
not verify page CRCs (``tests/test_storage_integrity.py`` shows it reading a corrupted page
back as different numbers without an error), and no page checksum covers the footer — whose
statistics decide which row groups a filtered query skips. The sha256 of the whole file
covers every byte; it costs one read of each file per scan. Measured here (2 cores, the
storage benchmark's sweep: 48 trials × 20k feature rows, 256 MB): hashing adds ~0.35 s per
scan — on 972 parts a filtered query goes 0.66 → 1.04 s (1.6×), on the 48 compacted files
0.08 → 0.45 s (6×: the query reads 4 of 25 columns, the hash every byte), a full collect
0.63 → 1.54 s. ``content=False`` keeps the free checks (records, sizes, footers, row counts)
for interactive loops over data already verified.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import StorageError
from .fs import Root, arrow_owned, read_parquet_buffer, undecodable_name
from .layout import (PartName, is_hidden, live_parts, parse_part_name, parse_partition_dirs,
                     parse_trial_file_name)
from .records import RECORD_DIR, SEALED, SEALING, Entry, Record, parse_record_file_name, retired, sha256
from .schema import (PARTITION_KEYS, PARTITIONED, STREAMED, TABLES, compatible, read_file_metadata,
                     type_problems, union_schema)

DAMAGE = ("missing", "truncated", "corrupt", "unreadable", "unrecorded", "invalid")
#: How an `unreadable` problem about a folder a listing could not enter begins (its files unseen).
UNLISTED = "folder cannot be listed"
WARNING = ("legacy",)
NOTE = ("interrupted",)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one stored file."""

    kind: str             # one of DAMAGE, WARNING, NOTE
    path: str             # the file, as a URI a user can paste
    detail: str
    table: str
    sweep: str
    trial_id: str | None = None   # None for files of no trial (runs, summary, a stray file)

    @property
    def damage(self) -> bool:
        return self.kind in DAMAGE

    @property
    def message(self) -> str:
        """What is wrong, starting with the kind (invalid files: the reason says it)."""
        return self.detail if self.kind == "invalid" else f"{self.kind}: {self.detail}"

    def line(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class StoredFile:
    """A data file found in a table directory, and what the inspection learned about it."""

    sweep: str
    path: str
    directory: str               # where its records live: <directory>/_sealed/
    group: tuple                 # (sweep, partition dirs): where supersession is decided
    size: int | None
    owner: str | None = None     # record owner: the trial id, or the table name (runs/summary)
    partition: dict | None = None
    part: PartName | None = None
    trial_id: str | None = None
    entry: Entry | None = None
    schema: pa.Schema | None = None       # columns only (file metadata removed)
    steps: tuple[int, int] | None = None   # min/max step from row-group statistics
    overlaps: bool = True                  # may share (trial_id, step) with another file
    data: bytes | None = None              # the bytes, when the caller asked to keep them
    versions: list[dict] = field(default_factory=list)  # sealed versions it may be (records)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass
class Inspection:
    files: list[StoredFile] = field(default_factory=list)   # good files, to be read
    problems: list[Problem] = field(default_factory=list)
    records: int = 0
    checked: int = 0

    @property
    def damage(self) -> list[Problem]:
        return [p for p in self.problems if p.damage]


def sweep_dirs(r: Root) -> list[tuple[str, str]]:
    """(sweep name, directory) pairs under a root; the root itself when it is a sweep folder.

    A folder holding a table folder *and* sweep folders (a sweep named like a table, made
    before such names were refused) is ambiguous: read as one sweep, it would hide the
    others, so it is an error naming both."""
    info = r.info(r.base)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"storage root not found: {r.display(r.base)}", r.display(r.base))
    if info.type != pafs.FileType.Directory:
        raise StorageError(f"storage root is not a directory: {r.display(r.base)}",
                           r.display(r.base))
    children = [c for c in r.list_dirs(r.base) if not is_hidden(c)]
    tables = [c for c in children if c in TABLES]
    if tables:
        sweeps = [c for c in children if c not in TABLES and holds_a_table(r, r.path(c))]
        if sweeps:
            raise StorageError(
                f"{r.display(r.base)}: ambiguous root: it holds table folder(s) "
                f"{', '.join(tables)} and sweep folder(s) {', '.join(sweeps[:5])}; a sweep "
                f"named like a table hides the others — rename it", r.display(r.base))
        name = r.base.rstrip("/").rpartition("/")[2]
        return [(name, r.base)]
    return [(c, r.path(c)) for c in children]


def unlisted_folders(problems: list[Problem]) -> list[Problem]:
    """The problems that are folders no listing could enter: which trials' files lie there is
    unknown, so nothing in them is checked, called missing or counted."""
    return [p for p in problems if p.kind == "unreadable" and p.detail.startswith(UNLISTED)]


def holds_a_table(r: Root, directory: str) -> bool:
    """Whether `directory` holds a table folder with table contents (partition folders, or
    ``<table>.parquet``) — not merely a folder of that name, such as a report's
    ``figures/trials/``."""
    # Table by table rather than a listing of `directory`: the folders above a storage root are
    # checked too, and one of them may hold anything (thousands of entries, names that do not decode).
    for t in (c for c in TABLES if r.is_dir(f"{directory.rstrip('/')}/{c}")):
        tdir = f"{directory.rstrip('/')}/{t}"
        if (any(d.startswith(f"{PARTITION_KEYS[0]}=") for d in r.list_dirs(tdir))
                or r.exists(f"{tdir}/{t}.parquet")):
            return True
    return False


def one_level_too_deep(r: Root) -> str:
    """A hint for a root that is one sweep's table folder (``…/SWEEP/features``): ``" — it is
    the 'features' table folder of sweep …: give that sweep's folder"``; "" otherwise."""
    parent, _, name = r.base.rstrip("/").rpartition("/")
    if name in TABLES and parent and holds_a_table(r, parent):
        return f" — it is the {name!r} table folder of sweep {r.display(parent)}: give that sweep's folder"
    return ""


def inspect_table(r: Root, table: str, sweeps: list[tuple[str, str]], *, content: bool = True,
                  deep: bool = False, keep_bytes: bool = False,
                  only: tuple[str, str] | None = None) -> Inspection:
    """Inspect `table` of the given (sweep, sweep directory) pairs (module docstring).

    ``only=(directory, owner)`` restricts it to one trial's files in one directory (what
    compaction needs); ``keep_bytes`` keeps each good file's bytes (``StoredFile.data``).

    Damage is confirmed before it is reported: a file replaced while it is inspected (a running
    trial rewrites its trials row at every checkpoint) can be listed at its old size and checked
    against its record's new entry — "corrupt" for a few milliseconds. So when a pass finds
    damage, the inspection runs once more and reports the second pass (a fresh listing and
    fresh records); damage that is real is found again, at twice the cost of a damaged read.
    """
    first = _inspect_once(r, table, sweeps, content=content, deep=deep, keep_bytes=keep_bytes, only=only)
    if not any(p.kind in DAMAGE for p in first.problems):
        return first
    return _inspect_once(r, table, sweeps, content=content, deep=deep, keep_bytes=keep_bytes, only=only)


def _inspect_once(r: Root, table: str, sweeps: list[tuple[str, str]], *, content: bool,
                  deep: bool, keep_bytes: bool, only: tuple[str, str] | None) -> Inspection:
    out = Inspection()
    candidates: list[StoredFile] = []
    record_paths: list[tuple[str, str, str]] = []  # (sweep, path, directory)
    for sweep, sdir in sweeps:
        tdir = f"{sdir.rstrip('/')}/{table}"
        infos, denied = r.list_files_around_denied(only[0] if only else tdir)
        for exc in denied:
            # Its files can be neither checked nor counted missing: say so, and check the rest.
            cause = exc.__cause__
            if isinstance(cause, UnicodeDecodeError):
                why, fix = f"{undecodable_name(cause)!r} is not a UTF-8 name", "rename or remove that entry"
            else:
                why = "no permission" if isinstance(cause, PermissionError) else str(cause or exc)
                fix = "fix access, do not delete it"
            out.problems.append(Problem("unreadable", exc.path or tdir, f"{UNLISTED} ({why}): "
                                        f"its files are not checked; {fix}", table, sweep))
        for info in infos:
            rel = info.path[len(tdir) + 1:].split("/")
            if _is_record(rel, table):
                directory = info.path.rpartition("/")[0].rpartition("/")[0]
                owner = parse_record_file_name(rel[-1])[0]
                if only is None or owner == only[1]:
                    record_paths.append((sweep, info.path, directory))
                continue
            if any(is_hidden(p) for p in rel):
                continue  # in-flight temp files and other hidden entries; never data
            f, reason = _classify(sweep, info, tdir, rel, table)
            owner = f.owner if f is not None else _owner_guess(rel[-1], table)
            if only is not None and owner != only[1]:
                continue
            if reason:
                out.problems.append(Problem("invalid", r.display(info.path), reason, table, sweep,
                                            owner))
            else:
                candidates.append(f)
    records = _read_records(r, table, record_paths, out)
    candidates = _not_superseded(candidates)
    out.checked = len(candidates)
    _check_files(r, table, candidates, records, content, deep, keep_bytes, out)
    sweep_of = {directory: sweep for sweep, _, directory in record_paths}
    _find_missing(r, table, candidates, records, sweep_of, out)
    _type_conflicts(r, table, out)
    return out


def _is_record(rel: list[str], table: str) -> bool:
    depth = len(PARTITION_KEYS) + 2 if table in PARTITIONED else 2
    return (len(rel) == depth and rel[-2] == RECORD_DIR and not is_hidden(rel[-1])
            and parse_record_file_name(rel[-1]) is not None)


def _owner_guess(name: str, table: str) -> str | None:
    if table in STREAMED:
        p = parse_part_name(name)
        return p.trial_id if p else None
    return parse_trial_file_name(name) if table == "trials" else None


def _classify(sweep: str, info: pafs.FileInfo, tdir: str, rel: list[str],
              table: str) -> tuple[StoredFile | None, str | None]:
    name, path = rel[-1], info.path
    if not name.endswith(".parquet"):
        return None, "unexpected file (not a .parquet file) in a table directory"
    if table not in PARTITIONED:
        if len(rel) != 1:
            return None, f"unexpected location: {table} files sit directly in {table}/"
        return StoredFile(sweep, path, tdir, (sweep,), info.size, owner=name[:-len(".parquet")]), None
    layout = "workload=…/optimizer=…/weight_decay=…/<file>"
    if len(rel) != len(PARTITION_KEYS) + 1:
        return None, f"unexpected location: {table} files sit at {table}/{layout}"
    partition = parse_partition_dirs(rel[:-1])
    if partition is None:
        return None, f"bad partition directories {'/'.join(rel[:-1])!r} (expected {layout}, " \
                     f"weight_decay as a canonical float such as 1.0)"
    f = StoredFile(sweep, path, path.rpartition("/")[0], (sweep, *rel[:-1]), info.size,
                   partition=partition)
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
    f.owner = f.trial_id
    return f, None


def _not_superseded(files: list[StoredFile]) -> list[StoredFile]:
    """Files no compacted file of the same trial and directory supersedes (by name)."""
    groups: dict[tuple, list[StoredFile]] = {}
    for f in files:
        groups.setdefault(f.group, []).append(f)
    out = []
    for group in groups.values():
        parts = [f.part for f in group if f.part is not None]
        live = live_parts(parts)
        out.extend(f for f in group if f.part is None or f.part in live)
    return sorted(out, key=lambda f: f.path)


# ---------------------------------------------------------------------------------- records
def _read_records(r: Root, table: str, paths: list[tuple[str, str, str]],
                  out: Inspection) -> dict[tuple[str, str], dict[str, Entry]]:
    """Entries per (directory, owner), merged over the owner's records."""
    def read(item):
        path = item[1]
        try:
            return Record.from_bytes(r.read_bytes(path))
        except (StorageError, ValueError) as exc:
            return exc

    merged: dict[tuple[str, str], dict[str, Entry]] = {}
    for (sweep, path, directory), rec in zip(paths, _threaded(r, read, paths)):
        owner, key = parse_record_file_name(path.rpartition("/")[2])
        if not isinstance(rec, Exception) and (rec.owner, rec.key, rec.table) != (owner, key, table):
            rec = ValueError(f"record of {rec.table}/{rec.owner}.{rec.key} under this name")
        if isinstance(rec, Exception):
            out.problems.append(Problem("corrupt", r.display(path), f"unreadable record: {rec}",
                                        table, sweep, owner if table in PARTITIONED else None))
            merged.setdefault((directory, owner), {})  # the trial keeps records
            continue
        out.records += 1
        entries = merged.setdefault((directory, owner), {})
        for name, e in rec.entries.items():
            if name not in entries or e.state == SEALED:
                entries[name] = e
    return merged


# ------------------------------------------------------------------------------------ files
def _check_files(r: Root, table: str, files: list[StoredFile],
                 records: dict[tuple[str, str], dict[str, Entry]], content: bool, deep: bool,
                 keep_bytes: bool, out: Inspection) -> None:
    for f in files:
        f.entry = records.get((f.directory, f.owner), {}).get(f.name)

    def examine(f: StoredFile):
        """(footer metadata, problem kind, detail) from the I/O of one file."""
        e = f.entry
        if e is not None and f.size is not None and not e.matching(f.size):
            kind = "truncated" if f.size < e.bytes else "corrupt"
            return None, kind, f"{f.size} bytes, {e.bytes} sealed"
        data = None
        if (content and e is not None) or deep or keep_bytes:
            try:
                data = r.read_bytes(f.path)
            except StorageError as exc:
                cause = exc.__cause__ or exc
                if isinstance(cause, PermissionError):  # the bytes may be fine: not "corrupt"
                    return None, "unreadable", f"no permission to read it ({cause})"
                return None, "corrupt", f"unreadable ({cause})"
        if e is not None:
            f.versions = e.matching(len(data) if data is not None else f.size,
                                    sha256(data) if content and data is not None else None)
            if not f.versions:
                return None, "corrupt", "content differs from what was sealed (sha256 mismatch)"
        try:
            owned = arrow_owned(data) if data is not None else None  # fs.arrow_owned: why
            source = pa.BufferReader(owned) if owned is not None else f.path
            md = pq.read_metadata(source, filesystem=None if owned is not None else r.fs)
            decoded = read_parquet_buffer(owned) if deep else None
        except (OSError, pa.ArrowException, ValueError) as exc:
            return None, ("corrupt" if e is not None else "invalid"), \
                f"unreadable Parquet file ({type(exc).__name__}: {exc})"
        if decoded is not None and table in STREAMED and "step" in decoded.column_names:
            # A writer never repeats a step within one file; scan reads a file that overlaps no
            # other without deduplicating, so a repeated step would count twice.
            repeated = decoded.num_rows - pc.count_distinct(decoded["step"], mode="all").as_py()
            if repeated:
                return None, ("corrupt" if e is not None else "invalid"), f"{repeated} row(s) repeat a step"
        if keep_bytes:
            f.data = data
        return md, None, None

    results = _threaded(r, lambda f: examine(f), files)
    distinct: list[tuple[pa.Schema, list[str]]] = []  # most files share one schema
    for f, (md, kind, detail) in zip(files, results):
        if kind is None:
            kind, detail = _check_footer(table, f, md, records, distinct)
        if kind is None:
            out.files.append(f)
            continue
        if kind in DAMAGE or kind in NOTE:
            f.data = None
        out.problems.append(Problem(kind, r.display(f.path), detail, table, f.sweep, f.trial_id))
        if kind not in DAMAGE:
            out.files.append(f)  # legacy: readable, nothing to check it against


def _check_footer(table: str, f: StoredFile, md: pq.FileMetaData, records,
                  distinct: list) -> tuple[str | None, str | None]:
    try:
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError) as exc:
        return ("corrupt" if f.entry else "invalid"), f"unreadable Parquet schema ({exc})"
    # Check each distinct column set once; files share the checked instance (interning), so
    # later steps can compare schemas by identity.
    columns, problems = next(((c, p) for c, p in distinct if c.equals(schema)), (None, None))
    if columns is None:
        columns = schema.remove_metadata()
        problems = type_problems(table, columns)
        distinct.append((columns, problems))
    meta = read_file_metadata(schema)
    reason = _check_metadata(table, f, meta, problems)
    if reason is None and f.part is not None:
        f.steps = _step_range(md)
        if f.steps is not None and not (f.part.lo <= f.steps[0] and f.steps[1] <= f.part.hi):
            reason = (f"steps {f.steps[0]}..{f.steps[1]} in the file lie outside the range "
                      f"{f.part.lo}..{f.part.hi} its name claims")
    if reason is None:
        reason = _row_key_problem(table, f, md)
    if reason:
        return ("corrupt" if f.entry else "invalid"), reason
    f.schema = columns
    e = f.entry
    if e is not None:
        if not any(v["rows"] == md.num_rows for v in f.versions):
            return "corrupt", f"{md.num_rows} rows, {e.rows} sealed"
        return None, None
    marker = meta.get("record")
    if marker is not None or (f.directory, f.owner) in records:
        where = f"{RECORD_DIR}/{f.owner}.{marker}.json" if marker else f"{RECORD_DIR}/{f.owner}.*.json"
        return "unrecorded", (f"listed in no record of {f.owner} (a stray or copied file, or "
                              f"its record {where} is lost)")
    return "legacy", ("written before sealed-file records: its completeness and content cannot be "
                      "checked (a change inside it can go unnoticed)")


def _check_metadata(table: str, f: StoredFile, meta: dict | None, problems: list[str]) -> str | None:
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


def _column_stats(md: pq.FileMetaData, name: str) -> list:
    """The statistics of column ``name`` in each non-empty row group (None where absent)."""
    out = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.num_rows:
            col = next((rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema == name), None)
            out.append(col.statistics if col is not None else None)
    return out


def _row_key_problem(table: str, f: StoredFile, md: pq.FileMetaData) -> str | None:
    """What the row-group statistics say is wrong with the key columns of a trial's file (free:
    footer only): rows without a trial, step or attempt, or rows of another trial or attempt
    than the file's name — which scan would file under that other trial or step, silently."""
    if f.trial_id is None:
        return None
    keys = ("trial_id", "attempt", "step") if table in STREAMED else ("trial_id",)
    for name in keys:
        for st in _column_stats(md, name):
            if st is not None and st.null_count:
                return f"{st.null_count} row(s) without a {name}"
    for st in _column_stats(md, "trial_id"):
        if st is not None and st.has_min_max and not (st.min == st.max == f.trial_id):
            other = st.min if st.min != f.trial_id else st.max
            return f"rows of trial {other!r} in a file of trial {f.trial_id!r}"
    if f.part is not None:
        # A part holds its own attempt's rows; a compacted file those of every attempt up to its own.
        lowest = 0 if f.part.compacted else f.part.attempt
        for st in _column_stats(md, "attempt"):
            if st is not None and st.has_min_max and not (lowest <= st.min and st.max <= f.part.attempt):
                return (f"rows of attempt {st.min}..{st.max} in a file of attempt "
                        f"{'≤ ' if f.part.compacted else ''}{f.part.attempt}")
    return None


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


def _find_missing(r: Root, table: str, present: list[StoredFile],
                  records: dict[tuple[str, str], dict[str, Entry]], sweep_of: dict[str, str],
                  out: Inspection) -> None:
    """Recorded files that should exist and do not (``present``: every file of the listing
    that is not superseded; superseded ones are by definition retired)."""
    here: dict[tuple[str, str], set[str]] = {}
    for f in present:
        here.setdefault((f.directory, f.owner), set()).add(f.name)
    for (directory, owner), entries in records.items():
        names = here.get((directory, owner), set())
        # Compacted files that retire what they cover: sealed ones, and any that exist.
        compacted = [n for n, e in entries.items()
                     if _is_compacted(n) and (e.state == SEALED or n in names)]
        compacted += [n for n in names if _is_compacted(n)]
        sweep = sweep_of[directory]
        for name, e in sorted(entries.items()):
            if name in names or retired(name, compacted):
                continue
            path = r.display(f"{directory}/{name}")
            steps = f", steps {e.lo}..{e.hi}" if e.lo is not None else ""
            trial = owner if table in PARTITIONED else None
            if r.exists(f"{directory}/{name}"):
                continue  # sealed after the listing (a live sweep): not missing
            if e.state == SEALING and e.previous is None:
                out.problems.append(Problem("interrupted", path, "its seal never completed "
                                            "(the writer did not acknowledge these rows)",
                                            table, sweep, trial))
            else:
                out.problems.append(Problem("missing", path, f"sealed ({e.rows} rows{steps}, "
                                            f"{e.bytes} bytes) but not found", table, sweep, trial))


def _is_compacted(name: str) -> bool:
    p = parse_part_name(name)
    return p is not None and p.compacted


def _type_conflicts(r: Root, table: str, out: Inspection) -> None:
    """Files whose column type disagrees with the union schema (first type seen wins)."""
    distinct = list({id(f.schema): f.schema for f in out.files if f.schema is not None}.values())
    schema = union_schema(table, distinct)
    reason_of = {}
    for columns in distinct:
        for fld in columns:
            want = schema.field(fld.name).type
            if not compatible(fld.type, want):
                reason_of[id(columns)] = f"column {fld.name!r} is {fld.type}, other files have {want}"
                break
    bad = [f for f in out.files if id(f.schema) in reason_of]
    for f in bad:
        out.problems.append(Problem("invalid", r.display(f.path), reason_of[id(f.schema)], table,
                                    f.sweep, f.trial_id))
    out.files = [f for f in out.files if id(f.schema) not in reason_of]


def _threaded(r: Root, fn, items: list) -> list:
    """``[fn(x) for x in items]`` on a few threads (file reads release the GIL; on an object
    store each is a round trip, so use more threads there). Strided chunks, one per thread: a
    future per file costs more than a local footer read."""
    if not items:
        return []
    workers = min(16 if r.is_object_store else 4, len(items))
    chunks = [items[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_chunk = list(pool.map(lambda chunk: [fn(x) for x in chunk], chunks))
    results = [None] * len(items)
    for i, chunk_results in enumerate(per_chunk):
        results[i::workers] = chunk_results
    return results
