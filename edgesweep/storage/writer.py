"""Crash-safe streaming of one trial's rows, and whole-table writes.

:class:`TrialWriter` buffers ``features`` and ``evals`` rows in memory and seals them as an
immutable Parquet *part* at each :meth:`TrialWriter.flush` — one file per table per flush, named
``<trial>.a<attempt>.s<lo>-<hi>.parquet`` (see :mod:`.layout`). Sealing is atomic
(:meth:`.fs.Root.write_bytes`), so a SIGKILL at any moment leaves only complete parts, and
every part is listed — rows, bytes, sha256, steps — in the attempt's record
(``_sealed/<trial>.a<attempt>.json``, :mod:`.records`), rewritten before and after each seal,
so that readers can tell a missing, truncated or corrupt part from a good one.

The protocol with the trainer's checkpoints (what makes "nothing lost, nothing doubled" hold):

1. ``writer.flush()`` — seals every buffered row; returns the sealed paths.
2. *then* save the checkpoint (model, optimiser, monitor state, step).

A crash before step 2 returns the trial to the previous checkpoint; the new attempt (attempt
number + 1) replays steps that step 1 already sealed. Both copies exist on disk; readers and
compaction keep the row of the newest attempt, so nothing is doubled. A crash before step 1
loses only unsealed rows, and the restored trial replays exactly those. Saving the checkpoint
*before* flushing would be wrong: a crash between the two would lose rows that no attempt
replays.

Within one writer, steps of a table must strictly increase: this keeps every part's step range
disjoint from the others of the same attempt (so names never collide) and guarantees one row
per (trial_id, step) per attempt.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from .errors import StorageError
from .compact import compact_trial
from .fs import Root, parquet_bytes, resolve_root
from .layout import (check_name, check_partition_dict, parse_trial_file_name, part_name, table_dir,
                     trial_file_name)
from .records import RECORD_DIR, Record, entry_for, record_file_name, seal_recorded
from .schema import (DECLARED, DEFAULT_ROW_GROUP, FREE_KEYS, PARTITION_KEYS, STREAMED, check_table,
                     file_metadata, type_problems)



class TrialWriter:
    """Streams the ``features`` and ``evals`` rows of one attempt of one trial.

    ``partition`` is ``{"workload": str, "optimizer": str, "weight_decay": float}``; it decides the
    directory and fills those three columns of every row. ``attempt`` must increase each time the trial is
    restored (rows of a higher attempt win on read).

    ``add`` raises ``ValueError`` for a column the schema does not declare (add it to
    :mod:`.schema` instead — columns are only ever added), for a non-increasing step, and for
    a first row whose values do not fit the column types.
    """

    def __init__(self, root, sweep: str, trial_id: str, attempt: int, partition: dict, *,
                 row_group_size: int = DEFAULT_ROW_GROUP):
        self.root: Root = resolve_root(root)
        self.sweep = check_name("sweep", sweep)
        self.trial_id = check_name("trial_id", trial_id)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"attempt must be an int ≥ 0, got {attempt!r}")
        self.attempt = attempt
        self.partition = check_partition_dict(partition)
        self.row_group_size = row_group_size
        self._rows: dict[str, list[dict]] = {t: [] for t in STREAMED}
        self._last_step: dict[str, int | None] = {t: None for t in STREAMED}
        self._checked: set[str] = set()
        self._columns = {t: frozenset(DECLARED[t].names) for t in STREAMED}
        self._closed = False
        self._records: dict[str, Record] = {}  # this attempt's record per table (lazily loaded)
        #: (table, lo, hi, path) of every part this writer sealed, in order.
        self.sealed: list[tuple[str, int, int, str]] = []

    # -- streaming ---------------------------------------------------------------------------
    def add(self, table: str, row: dict) -> None:
        """Buffer one row of ``features`` or ``evals``; it is written at the next flush."""
        if self._closed:
            raise StorageError(f"writer of trial {self.trial_id} is closed (compacted)")
        if table not in STREAMED:
            check_table(table)
            raise ValueError(f"table {table!r} is not streamed; use write_table() for it")
        schema = DECLARED[table]
        row = dict(row)
        for key, want in (("trial_id", self.trial_id), ("attempt", self.attempt)):
            if key in row and row[key] != want:
                raise ValueError(f"row {key}={row[key]!r} does not match the writer's {want!r}")
            row[key] = want
        for key in PARTITION_KEYS:
            if key in row and row[key] != self.partition[key]:
                raise ValueError(f"row {key}={row[key]!r} does not match the writer's "
                                 f"partition {self.partition[key]!r}")
            row[key] = self.partition[key]
        unknown = row.keys() - self._columns[table]
        if unknown:
            raise ValueError(f"{table}: unknown column(s) {sorted(unknown)}; declare them in "
                             f"edgesweep/storage/schema.py (columns are only ever added)")
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                step = int(step) if step is not None and int(step) == step else None
            except (TypeError, ValueError):
                step = None
            if step is None:
                raise ValueError(f"{table}: step must be an int, got {row.get('step')!r}")
            row["step"] = step
        if step < 0:
            raise ValueError(f"{table}: step must be ≥ 0, got {step}")
        last = self._last_step[table]
        if last is not None and step <= last:
            raise ValueError(f"{table}: step {step} does not increase (last {last}) in trial "
                             f"{self.trial_id} attempt {self.attempt}")
        if table not in self._checked:
            # Type-check the first row now, so a bad column fails at the call that caused it
            # rather than at the next flush.
            try:
                pa.Table.from_pylist([row], schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ValueError(f"{table}: row does not fit the schema: {exc}") from exc
            self._checked.add(table)
        self._rows[table].append(row)
        self._last_step[table] = step

    @property
    def pending(self) -> dict[str, int]:
        """Buffered (unsealed) rows per table."""
        return {t: len(rows) for t, rows in self._rows.items()}

    def flush(self) -> list[str]:
        """Seal every buffered row: one part per table that has rows. Returns the sealed paths
        (as URIs). Only after this returns may the trainer save its checkpoint."""
        paths = []
        for table in STREAMED:
            rows = self._rows[table]
            if not rows:
                continue
            try:
                arrow = pa.Table.from_pylist(rows, schema=DECLARED[table])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise StorageError(f"{table} rows of trial {self.trial_id} steps "
                                   f"{rows[0]['step']}..{rows[-1]['step']} do not fit the schema: {exc}") from exc
            lo, hi = rows[0]["step"], rows[-1]["step"]
            key = f"a{self.attempt:03d}"
            arrow = arrow.replace_schema_metadata(file_metadata(
                table, sweep=self.sweep, trial_id=self.trial_id, attempt=self.attempt,
                steps=[lo, hi], kind="part", partition=self.partition, record=key))
            directory = self.root.path(table_dir(self.sweep, table, self.partition))
            name = part_name(self.trial_id, self.attempt, lo, hi)
            data = parquet_bytes(arrow, row_group_size=self.row_group_size)
            record = self._records.get(table)
            if record is None:
                record = self._records[table] = load_record(
                    self.root, directory, Record(table, self.sweep, self.trial_id, key, self.partition))
            path = seal_recorded(self.root, directory, record,
                                 entry_for(name, data, len(rows), lo, hi), data)
            self._rows[table] = []
            uri = self.root.uri(path)
            self.sealed.append((table, lo, hi, uri))
            paths.append(uri)
        return paths

    def compact(self, end_step: int | None = None) -> list[str]:
        """Flush, then compact this trial's files of every streamed table (all attempts).

        Call when the trial has finished; the writer accepts no more rows afterwards.
        ``end_step``: the trial's last step; rows past it (an abandoned attempt's) are dropped
        (:func:`.compact.compact_trial`). Returns the compacted file URIs.
        """
        self.flush()
        self._closed = True
        out = []
        for table in STREAMED:
            path = compact_trial(self.root, self.sweep, table, self.partition, self.trial_id,
                                 row_group_size=self.row_group_size, end_step=end_step)
            if path is not None:
                out.append(path)
        return out

    def close(self) -> list[str]:
        """Seal what is buffered; the writer accepts no more rows."""
        paths = self.flush()
        self._closed = True
        return paths

    def __enter__(self) -> "TrialWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception the buffer is *not* sealed: the trial will be restored from its last
        # checkpoint, which matches the last flush, and replays those rows.
        if exc_type is None:
            self.close()


def write_table(root, sweep: str, table: str, df, *,
                row_group_size: int = DEFAULT_ROW_GROUP) -> list[str]:
    """Write a whole-table output, atomically replacing what it supersedes. Returns URIs.

    * ``trials``: one file per trial (``trials/<partition>/<trial_id>.parquet``), so concurrent
      trials never touch the same file; rewriting a trial's row replaces its file. ``df`` needs
      ``trial_id`` and the partition columns; declared columns are cast to their declared types
      (e.g. integer weight decays to Float64); ``sweep`` is filled in.
    * ``runs``, ``summary``: one file, ``<table>/<table>.parquet``, any columns; only the key
      columns (``trial_id`` for runs) and the types of well-known columns are checked.
    """
    import polars as pl  # here, not at module level: the streaming path needs pyarrow only

    r = resolve_root(root)
    check_name("sweep", sweep)
    check_table(table)
    if table in STREAMED:
        raise ValueError(f"table {table!r} is streamed; write it with TrialWriter")
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"write_table expects a polars.DataFrame, got {type(df).__name__}")
    if table == "trials":
        return _write_trials(r, sweep, df, row_group_size)

    missing = [c for c in FREE_KEYS[table].names if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing key column(s) {missing}")
    arrow = df.to_arrow()
    if "weight_decay" in arrow.column_names:
        i = arrow.column_names.index("weight_decay")
        arrow = arrow.set_column(i, "weight_decay", arrow.column(i).cast(pa.float64()))
    arrow = _large_to_plain(arrow)
    problems = type_problems(table, arrow.schema)
    if problems:
        raise ValueError(f"{table}: {'; '.join(problems)}")
    arrow = arrow.replace_schema_metadata(file_metadata(table, sweep=sweep, kind="table",
                                                        written_at=_now(), record="table"))
    directory = r.path(table_dir(sweep, table))
    data = parquet_bytes(arrow, row_group_size=row_group_size)
    record = load_record(r, directory, Record(table, sweep, table, "table"))
    path = seal_recorded(r, directory, record, entry_for(f"{table}.parquet", data, arrow.num_rows), data)
    return [r.uri(path)]


def _write_trials(r: Root, sweep: str, df, row_group_size: int) -> list[str]:
    import polars as pl

    schema = DECLARED["trials"]
    missing = [c for c in ("trial_id",) + PARTITION_KEYS if c not in df.columns]
    if missing:
        raise ValueError(f"trials: missing column(s) {missing}")
    unknown = [c for c in df.columns if c not in schema.names]
    if unknown:
        raise ValueError(f"trials: unknown column(s) {unknown}; declare them in "
                         f"edgesweep/storage/schema.py")
    if df["trial_id"].n_unique() != df.height:
        raise ValueError("trials: one row per trial_id expected")
    df = df.with_columns(pl.lit(sweep).alias("sweep"))
    paths = []
    for row in df.iter_rows(named=True):
        partition = check_partition_dict({k: row[k] for k in PARTITION_KEYS})
        trial_id = check_name("trial_id", row["trial_id"])
        values = dict(row, **partition)
        try:
            arrow = pa.Table.from_pylist([values], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"trials: row of {trial_id} does not fit the schema: {exc}") from exc
        arrow = arrow.replace_schema_metadata(file_metadata(
            "trials", sweep=sweep, trial_id=trial_id, kind="table", written_at=_now(),
            partition=partition, record="row"))
        directory = r.path(table_dir(sweep, "trials", partition))
        name = trial_file_name(trial_id)
        assert parse_trial_file_name(name) == trial_id
        data = parquet_bytes(arrow, row_group_size=row_group_size)
        record = load_record(r, directory, Record("trials", sweep, trial_id, "row", partition))
        path = seal_recorded(r, directory, record, entry_for(name, data, 1), data)
        paths.append(r.uri(path))
    return paths


def load_record(r: Root, directory: str, fresh: Record) -> Record:
    """The stored record of `fresh`'s writer, or `fresh` when there is none. A damaged stored
    record is replaced: only this writer lists files in it, and the files it wrote again get
    entries again (others show up as unrecorded — reported, not lost silently)."""
    path = f"{directory}/{RECORD_DIR}/{record_file_name(fresh.owner, fresh.key)}"
    if not r.exists(path):
        return fresh
    try:
        stored = Record.from_bytes(r.read_bytes(path))
    except (StorageError, ValueError):
        return fresh
    if (stored.table, stored.owner, stored.key) != (fresh.table, fresh.owner, fresh.key):
        return fresh
    return stored


def _plain_type(t: pa.DataType) -> pa.DataType:
    """Polars exports large_string / large_list / views; the schemas declare the plain types."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(_plain_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _plain_type(f.type), f.nullable) for f in t])
    return t


def _large_to_plain(table: pa.Table) -> pa.Table:
    return table.cast(pa.schema([pa.field(f.name, _plain_type(f.type), f.nullable)
                                 for f in table.schema]))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
