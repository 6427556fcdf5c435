"""Compaction: a finished trial's parts become one file, sorted by step, deduplicated.

The file *names* say what is live (:mod:`.layout`): a compacted file is named
``<trial>.c<A>.s<LO>-<HI>.parquet`` and, by that name alone, supersedes every file of the same
trial with attempt ≤ A and step range inside [LO, HI]. The sequence is

1. inspect the trial's files (:func:`.checks.inspect_table`): every live file (parts of all
   attempts, earlier compacted files) must match its sealed-file record, and every recorded
   file must be there — otherwise nothing is compacted and a :class:`StorageError` names the
   damaged or missing files: compacting around them would bake the damage into a file that
   then supersedes (and deletes) the evidence;
2. read them (pyarrow, page checksums verified), keep the newest attempt of each step, sort;
3. seal the result under its ``c`` name with its own record
   (``_sealed/<trial>.c<A>.s<LO>-<HI>.json``, :func:`.records.seal_recorded`);
4. delete the files it supersedes, then remove their entries from the trial's other records
   (deleting records left empty).

A reader lists a directory and drops every file a compacted file supersedes. Killed before 3
completes: no compacted file exists, the parts are all live — the reader sees the parts.
Killed after 3 (or during 4): the compacted file exists and hides every leftover input, and
the records' leftover entries for inputs are retired by it — the reader sees the compacted
file only. So at every instant a listing yields either the parts or the compacted file, never
both and never neither, and re-running compaction finishes the job. Every record has one
writer (the trial's attempt, or this compaction), so no record needs an atomic
read-modify-write of an object another process writes; step 4 rewrites records of attempts
that have finished (compaction runs when the trial has).

The range condition makes compaction safe even while a trial still writes: later parts of the
same attempt have steps above HI, so they stay live; parts of a newer attempt have attempt > A,
so they stay live; both then win or coexist through the readers' newest-attempt dedupe.

What names cannot give: a reader that *listed* before step 4 and opens a part after it gets
"file not found" at collect time and must re-scan (the data is then in the compacted file).

Housekeeping: compaction also removes the trial's hidden temp files older than
:data:`STALE_TEMP_S` (left by writers killed mid-seal), next to its parts and its records.
On S3 a killed upload leaves an invisible incomplete multipart upload; a bucket lifecycle
rule (AbortIncompleteMultipartUpload) reclaims those.
"""

from __future__ import annotations

import time
import warnings

import pyarrow as pa
import pyarrow.compute as pc

from .checks import StoredFile, inspect_table
from .errors import StorageError, StorageWarning
from .fs import Root, parquet_bytes, read_parquet_bytes, resolve_root
from .layout import (check_name, check_partition_dict, is_hidden, parse_part_name,
                     parse_partition_dirs, part_name, table_dir)
from .records import RECORD_DIR, Record, entry_for, parse_record_file_name, retired, seal_recorded
from .schema import (DEFAULT_ROW_GROUP, FINISHED, STREAMED, conform, file_metadata, type_problems,
                     union_schema)

#: Age after which a trial's leftover temp file is certainly not an in-flight write.
STALE_TEMP_S = 600


def compact_trial(root, sweep: str, table: str, partition: dict, trial_id: str, *,
                  row_group_size: int = DEFAULT_ROW_GROUP, delete_inputs: bool = True,
                  end_step: int | None = None) -> str | None:
    """Compact one trial's files of one streamed table. Returns the compacted file's URI, or
    None when the trial has no files. Idempotent: a trial already compacted into one file is
    left as it is (leftovers of an interrupted clean-up are removed). A damaged or missing
    input raises :class:`StorageError` naming it, and nothing changes.

    ``end_step``: the step the trial's final attempt ended at. Rows past it can only be an
    abandoned attempt's — sealed before a checkpoint Tune never registered, by a run that the
    final attempt (restarted from an earlier checkpoint, with non-deterministic GPU kernels, or
    a lower ``max_steps``) did not reach — and are dropped; the compacted file's name still
    spans every input, so those parts are superseded and deleted like the others.
    """
    r: Root = resolve_root(root)
    check_name("sweep", sweep)
    check_name("trial_id", trial_id)
    if table not in STREAMED:
        raise ValueError(f"only streamed tables are compacted ({', '.join(STREAMED)}), not {table!r}")
    partition = check_partition_dict(partition)
    directory = r.path(table_dir(sweep, table, partition))
    sweep_dir = r.path(sweep)

    listing = r.list_files(directory)
    _delete_all(r, _stale_temps(directory, listing, trial_id))
    insp = inspect_table(r, table, [(sweep, sweep_dir)], keep_bytes=True, only=(directory, trial_id))
    if insp.damage:
        shown = "\n".join(f"  {p.line()}" for p in insp.damage)
        raise StorageError(f"trial {trial_id} of {r.display(directory)} not compacted:\n{shown}",
                           [p.path for p in insp.damage])
    live = sorted(insp.files, key=lambda f: (f.part.lo, f.part.attempt, f.part.compacted))
    if not live:
        return None
    files = _trial_files(directory, listing, trial_id)  # every data file of the trial, by name
    past_end = end_step is not None and live[0].steps is not None and live[0].steps[1] > end_step
    if len(live) == 1 and live[0].part.compacted and not past_end:
        # Already compacted; only leftovers of an interrupted clean-up may remain. (Compacted
        # before the trial's end was known, with rows past it: rewritten under the same name.)
        if delete_inputs:
            _retire(r, directory, listing, trial_id, files, live[0].name)
        return r.uri(live[0].path)

    tables = []
    for f in live:
        t = _read_input(r, f)
        problems = type_problems(table, t.schema)
        if problems:
            raise StorageError(f"{r.display(f.path)}: wrong schema for {table}: {'; '.join(problems)}",
                               r.display(f.path))
        tables.append(t)
    schema = union_schema(table, [t.schema for t in tables])
    merged = pa.concat_tables([conform(t, schema) for t in tables])

    out_table = newest_per_step(merged)
    if out_table.num_rows == 0:
        return None
    lo, hi = out_table["step"][0].as_py(), out_table["step"][-1].as_py()
    if end_step is not None:
        # A finished trial: nothing is written after this. The name spans every input's name,
        # not only the rows kept, so that it supersedes them all — parts whose rows end_step
        # drops, and an earlier compacted file whose name already reached past its rows (left
        # live, it would bring dropped rows back). Never for a trial that may still write: a
        # name reaching past its rows would hide the parts it writes next.
        lo = min(lo, *(f.part.lo for f in live))
        hi = max(hi, *(f.part.hi for f in live))
        # Possibly to zero rows (an attempt that ended before its first snapshot): the
        # compacted file is then empty, and still retires the abandoned rows' files.
        out_table = out_table.filter(pc.less_equal(out_table["step"], end_step))
    attempt = max(f.part.attempt for f in live)
    key = f"c{attempt:03d}.s{lo:010d}-{hi:010d}"
    out_table = out_table.replace_schema_metadata(file_metadata(
        table, sweep=sweep, trial_id=trial_id, attempt=attempt, steps=[lo, hi], kind="compacted",
        inputs=len(live), partition=partition, record=key))
    out_name = part_name(trial_id, attempt, lo, hi, compacted=True)
    data = parquet_bytes(out_table, row_group_size=row_group_size)
    record = Record(table, sweep, trial_id, key, partition)
    entry = entry_for(out_name, data, out_table.num_rows, lo, hi)
    out_path = seal_recorded(r, directory, record, entry, data)
    if delete_inputs:
        _retire(r, directory, r.list_files(directory), trial_id, files, out_name)
    return r.uri(out_path)


def _read_input(r: Root, f: StoredFile) -> pa.Table:
    """An input's rows from the bytes the inspection verified, page checksums checked too."""
    try:
        return read_parquet_bytes(f.data)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"{r.display(f.path)}: unreadable Parquet file, not compacted: {exc}",
                           r.display(f.path)) from exc


def _trial_files(directory: str, listing, trial_id: str) -> dict[str, str]:
    """name -> path of the trial's data files directly in `directory`."""
    out = {}
    for info in listing:
        if info.path.rpartition("/")[0] != directory or is_hidden(info.base_name):
            continue
        p = parse_part_name(info.base_name)
        if p is not None and p.trial_id == trial_id:
            out[info.base_name] = info.path
    return out


def _stale_temps(directory: str, listing, trial_id: str) -> list[str]:
    """Temp files of this trial's writers killed mid-seal, next to its parts and records.
    Only old ones: a live writer of this trial (compaction of a running trial) may be sealing
    right now."""
    now = time.time()
    out = []
    for info in listing:
        parent = info.path.rpartition("/")[0]
        if parent not in (directory, f"{directory}/{RECORD_DIR}"):
            continue
        name = info.base_name
        if (name.startswith(f".{trial_id}.") and ".tmp-" in name and info.mtime is not None
                and now - info.mtime.timestamp() > STALE_TEMP_S):
            out.append(info.path)
    return out


def _retire(r: Root, directory: str, listing, trial_id: str, files: dict[str, str],
            compacted: str) -> None:
    """Delete what `compacted` supersedes (by the rule readers use), then drop the deleted
    files' entries from the trial's other records."""
    _delete_all(r, [path for name, path in files.items() if name != compacted and retired(name, [compacted])])
    own = parse_part_name(compacted)
    own_key = f"c{own.attempt:03d}.s{own.lo:010d}-{own.hi:010d}"
    for info in listing:
        if info.path.rpartition("/")[0] != f"{directory}/{RECORD_DIR}" or is_hidden(info.base_name):
            continue
        parsed = parse_record_file_name(info.base_name)
        if parsed is None or parsed[0] != trial_id or parsed[1] == own_key:
            continue
        try:
            record = Record.from_bytes(r.read_bytes(info.path))
        except (StorageError, ValueError) as exc:
            # Leave it for verify to report; the compacted file is sealed and verifiable.
            warnings.warn(f"{r.display(info.path)}: record not cleaned up: {exc}", StorageWarning)
            continue
        keep = {n: e for n, e in record.entries.items() if not retired(n, [compacted])}
        if not keep:
            r.delete(info.path)
        elif len(keep) != len(record.entries):
            record.entries = keep
            r.write_bytes(info.path, record.to_bytes())


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


def _trial_states(r: Root, sweep: str) -> tuple[dict[str, int], set[str]]:
    """(last step of each finished trial, trials whose ``running`` row may have a live owner)
    from the sweep's trials table; both empty when it has none."""
    from .liveness import owner_gone, read_driver_record
    from .scan import scan
    from .sweep import SweepPath

    sp = SweepPath(r.uri(r.path(sweep)), r, sweep)
    try:
        trials = scan(sp.uri, "trials", on_error="skip").collect().to_dicts()
    except StorageError:
        return {}, set()
    driver = read_driver_record(sp)
    ends = {t["trial_id"]: int(t["steps"]) for t in trials
            if t.get("status") in FINISHED and t.get("steps") is not None}
    running = {t["trial_id"] for t in trials
               if t.get("status") == "running" and owner_gone(t, driver) is None}
    return ends, running


def _delete_all(r: Root, paths: list[str]) -> None:
    for path in paths:
        r.delete(path)


def compact_sweep(root, sweep: str, tables=STREAMED, *, on_error: str = "raise") -> list[str]:
    """Compact every trial found under one sweep (e.g. after a driver died before its trials'
    own compaction ran). Returns the compacted URIs. A trial with damaged or missing files
    raises :class:`StorageError` (``on_error="raise"``, nothing further is compacted) or is
    left as it is with a :class:`StorageWarning` naming the files (``on_error="skip"``).

    The trials table decides how: a finished trial is compacted up to its recorded last step
    (``end_step``: rows an abandoned attempt sealed past it are dropped); a ``running`` one
    whose worker or driver may still be alive is left alone (its attempt is still writing);
    one whose owner is gone, or with no trials row, is compacted as it stands."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    r = resolve_root(root)
    ends, live_owner = _trial_states(r, sweep)
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
            if key in seen or parsed.trial_id in live_owner:
                continue
            seen.add(key)
            try:
                path = compact_trial(r, sweep, table, partition, parsed.trial_id,
                                     end_step=ends.get(parsed.trial_id))
            except StorageError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipping: {exc}", StorageWarning, stacklevel=2)
                continue
            if path is not None:
                out.append(path)
    return out
