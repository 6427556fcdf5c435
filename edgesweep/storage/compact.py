"""Compaction: a finished trial's parts become one file, sorted by step, deduplicated.

Why no manifest. The file *names* are the catalogue (:mod:`.layout`): a compacted file is named
``<trial>.c<A>.s<LO>-<HI>.parquet`` and, by that name alone, supersedes every file of the same
trial with attempt ≤ A and step range inside [LO, HI]. The sequence is

1. read every live file of the trial (parts of all attempts, earlier compacted files),
   keep the newest attempt of each step, sort by step;
2. seal the result under its ``c`` name (atomic: temp + fsync + rename, or one S3 object);
3. delete the files it supersedes.

A reader lists a directory and drops every file a compacted file supersedes. Killed before 2
completes: no compacted file exists, the parts are all live — the reader sees the parts. Killed
between 2 and 3 (or halfway through 3): the compacted file exists and hides every leftover
input — the reader sees the compacted file only. So at every instant a listing yields either
the parts or the compacted file, never both and never neither, and re-running compaction
finishes the job. A manifest would need an atomic read-modify-write of a shared object, which
S3 does not offer without conditional writes; names need none.

The range condition makes compaction safe even while a trial still writes: later parts of the
same attempt have steps above HI, so they stay live; parts of a newer attempt have attempt > A,
so they stay live; both then win or coexist through the readers' newest-attempt dedupe.

What names cannot give: a reader that *listed* before step 3 and opens a part after it gets
"file not found" at collect time and must re-scan (the data is then in the compacted file).

Housekeeping: compaction also removes the trial's hidden temp files older than
:data:`STALE_TEMP_S` (left by writers killed mid-seal on a local disk). On S3 a killed upload
leaves an invisible incomplete multipart upload; a bucket lifecycle rule
(AbortIncompleteMultipartUpload) reclaims those.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import StorageError
from .fs import Root, resolve_root
from .layout import (check_name, check_partition_dict, is_hidden, live_parts, parse_part_name,
                     parse_partition_dirs, part_name, table_dir)
from .schema import STREAMED, conform, file_metadata, type_problems, union_schema
from .writer import DEFAULT_ROW_GROUP

#: Age after which a trial's leftover temp file is certainly not an in-flight write.
STALE_TEMP_S = 600


def compact_trial(root, sweep: str, table: str, partition: dict, trial_id: str, *,
                  row_group_size: int = DEFAULT_ROW_GROUP, delete_inputs: bool = True) -> str | None:
    """Compact one trial's files of one streamed table. Returns the compacted file's URI, or
    None when the trial has no files. Idempotent: a trial already compacted into one file is
    left as it is.
    """
    r: Root = resolve_root(root)
    check_name("sweep", sweep)
    check_name("trial_id", trial_id)
    if table not in STREAMED:
        raise ValueError(f"only streamed tables are compacted ({', '.join(STREAMED)}), not {table!r}")
    partition = check_partition_dict(partition)
    directory = r.path(table_dir(sweep, table, partition))

    files = {}  # PartName -> path
    stale_temps = []
    now = time.time()
    for info in r.list_files(directory):
        name = info.base_name
        if "/" in info.path[len(directory) + 1:]:
            continue
        if is_hidden(name):
            # Temp files of writers killed mid-seal. Only old ones: a live writer of this
            # trial (compaction of a running trial) may be sealing right now.
            if (name.startswith(f".{trial_id}.") and ".tmp-" in name and info.mtime is not None
                    and now - info.mtime.timestamp() > STALE_TEMP_S):
                stale_temps.append(info.path)
            continue
        parsed = parse_part_name(name)
        if parsed is not None and parsed.trial_id == trial_id:
            files[parsed] = info.path
    _delete_all(r, stale_temps)
    if not files:
        return None
    live = sorted(live_parts(list(files)), key=lambda p: (p.lo, p.attempt, p.compacted))
    if len(live) == 1 and live[0].compacted:
        # Already compacted; only leftovers of an interrupted deletion may remain.
        out = files[live[0]]
        if delete_inputs:
            _delete_all(r, [files[p] for p in files if p != live[0]])
        return r.uri(out)

    tables = []
    for p in live:
        path = files[p]
        try:
            t = pq.read_table(path, filesystem=r.fs)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{r.display(path)}: unreadable Parquet file, not compacted: {exc}",
                               r.display(path)) from exc
        problems = type_problems(table, t.schema)
        if problems:
            raise StorageError(f"{r.display(path)}: wrong schema for {table}: {'; '.join(problems)}",
                               r.display(path))
        tables.append(t)
    schema = union_schema(table, [t.schema for t in tables])
    merged = pa.concat_tables([conform(t, schema) for t in tables])

    out_table = newest_per_step(merged)
    if out_table.num_rows == 0:
        return None
    lo, hi = out_table["step"][0].as_py(), out_table["step"][-1].as_py()
    attempt = max(p.attempt for p in live)
    out_table = out_table.replace_schema_metadata(file_metadata(
        table, sweep=sweep, trial_id=trial_id, attempt=attempt, steps=[lo, hi], kind="compacted",
        inputs=len(live), partition=partition))
    out_path = f"{directory}/{part_name(trial_id, attempt, lo, hi, compacted=True)}"
    r.write_parquet(out_path, out_table, row_group_size=row_group_size)

    if delete_inputs:
        out_name = parse_part_name(out_path.rpartition("/")[2])
        # Delete only what the new file supersedes (by the same rule readers use).
        _delete_all(r, [path for p, path in files.items() if path != out_path and out_name.covers(p)])
    return r.uri(out_path)


def newest_per_step(table: pa.Table) -> pa.Table:
    """One row per step — the newest attempt's — in step order (so row-group statistics on
    step are tight). Pure pyarrow: the write path does not need Polars."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, sort_keys=[("step", "ascending"), ("attempt", "descending")])
    table = table.take(order)
    step = table.column("step")
    n = table.num_rows
    first_of_step = pc.not_equal(step.slice(1), step.slice(0, n - 1))
    keep = pa.concat_arrays([pa.array([True])] + first_of_step.chunks) if n > 1 else pa.array([True])
    return table.filter(keep)


def _delete_all(r: Root, paths: list[str]) -> None:
    for path in paths:
        r.delete(path)


def compact_sweep(root, sweep: str, tables=STREAMED) -> list[str]:
    """Compact every trial found under one sweep (e.g. after a driver died before its trials'
    own compaction ran). Returns the compacted URIs."""
    r = resolve_root(root)
    out = []
    for table in tables:
        base = r.path(check_name("sweep", sweep), table)
        seen = set()
        for info in r.list_files(base):
            rel = info.path[len(base) + 1:].split("/")
            if len(rel) != 4 or is_hidden(rel[-1]):
                continue
            partition = parse_partition_dirs(rel[:3])
            parsed = parse_part_name(rel[-1])
            if partition is None or parsed is None:
                continue
            key = (tuple(rel[:3]), parsed.trial_id)
            if key in seen:
                continue
            seen.add(key)
            path = compact_trial(r, sweep, table, partition, parsed.trial_id)
            if path is not None:
                out.append(path)
    return out
