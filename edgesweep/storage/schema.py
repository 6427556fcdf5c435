"""The tables edgesweep stores, their Arrow schemas and the evolution rule.

Tables (DESIGN.md §3.2, names per docs/CONTRACTS.md), under ``<root>/<sweep>/<table>/``:

* ``features`` — one row per spectral snapshot of a trial (streamed by :class:`TrialWriter`);
* ``evals``    — one row per evaluation of a trial (streamed);
* ``trials``   — one row per trial (one file per trial, rewritten whole);
* ``runs``, ``summary``, ``detection`` — analysis outputs, written whole; their columns are
  whatever the analysis produces, only their key columns are checked.

``features``, ``evals`` and ``trials`` are laid out hive-style by ``workload=…/optimizer=…/
weight_decay=…`` directories, *and* every file stores those three columns too (dictionary/RLE
encoded: a few bytes per file). Readers take them from the file with the pinned types of
:data:`PARTITION_SCHEMA` (``weight_decay`` is Float64 even where every value is integral), so
queries never depend on hive path parsing — which would also pick up any ``key=value`` segment
of the root path itself — and predicates on them are pushed down to row-group statistics.
The scanner checks that a file's partition metadata matches its directory.

Evolution rule: a column is only ever *added* (nullable, appended to the list below), never
renamed, retyped or removed. Readers accept files of any version, fill the columns an older file
lacks with nulls and keep columns a newer writer added: what a file holds is told by its own
schema, so adding a column needs no version bump (``pid_start``, ``family`` and ``compute`` came
that way). Each file carries ``SCHEMA_VERSION`` in its key/value metadata for the change that
would need one — a meaning or layout that readers must handle differently — which has not
happened yet.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from .errors import StorageError

SCHEMA_VERSION = 1
METADATA_KEY = b"edgesweep"
DEFAULT_ROW_GROUP = 16_384  # rows per Parquet row group of every file edgesweep writes

F64 = pa.float64()
I64 = pa.int64()
I32 = pa.int32()
STR = pa.string()
F64_LIST = pa.list_(pa.float64())
TS = pa.timestamp("us", tz="UTC")

#: Hive partition columns, in path order, with the types every reader pins.
PARTITION_SCHEMA = pa.schema([("workload", STR), ("optimizer", STR), ("weight_decay", F64)])
PARTITION_KEYS = tuple(PARTITION_SCHEMA.names)

#: Columns every row of a streamed table carries, filled by the writer.
ROW_IDENTITY = [("trial_id", STR), *zip(PARTITION_KEYS, PARTITION_SCHEMA.types),
                ("attempt", I64), ("step", I64)]

FEATURES = pa.schema(ROW_IDENTITY + [
    ("window", I32),
    ("sigma", F64_LIST),
    ("k_star", I32),
    ("k_star_weighted", I32),
    ("gap_ratio", F64),
    ("gap", F64),
    ("g23", F64),
    ("delta_gram_fro", F64),
    ("delta_gram_fro_exact", F64),
    ("adiabatic", F64),
    ("alpha", F64_LIST),
    ("subspace_rotation", F64),
    ("bbp_ratio", F64),
    ("lr", F64),
    ("update_norm", F64),
    ("gram_ms", F64),
    ("nonfinite", pa.bool_()),
    ("loss", F64),        # filled by the trainer
    ("grad_norm", F64),   # filled by the trainer
])

EVALS = pa.schema(ROW_IDENTITY + [
    ("train_loss", F64),
    ("test_loss", F64),
    ("train_acc", F64),
    ("test_acc", F64),
    ("train_seq_acc", F64),
    ("test_seq_acc", F64),
    ("test_task_acc", F64_LIST),
    ("grok_acc", F64),
    ("memo_acc", F64),
])

TRIALS = pa.schema([
    ("trial_id", STR),
    *zip(PARTITION_KEYS, PARTITION_SCHEMA.types),
    ("attempt", I64),
    ("sweep", STR),             # as written; scan() reports the folder name instead
    ("preset", STR),
    ("seed", I64),
    ("status", STR),
    ("steps", I64),
    ("error", STR),
    ("node_id", STR),
    ("config", STR),           # JSON text of the resolved trial config
    ("code_version", STR),
    ("torch_version", STR),
    ("ray_version", STR),
    ("started_at", TS),
    ("finished_at", TS),
    ("wall_s", F64),
    # Added for the platform (nullable; older files read them as null):
    ("pid", I64),               # the trial's worker process on node_id (fault tests, debugging)
    ("hostname", STR),
    ("pid_start", STR),         # storage.liveness.process_identity(pid): tells a reused pid
    ("n_params", I64),
    ("grok_step", I64),         # first eval with grok accuracy ≥ threshold, seen live
    ("alarm_step", I64),        # the live detector's alarm
    ("family", STR),            # reporting family of the workload (workloads.catalog.family)
    ("compute", STR),           # processor, kernels and threads, or GPU (workloads.compute_environment)
])
#: trials.status values of a trial that ended for good (never trained again, not even on --resume).
FINISHED = ("completed", "stopped", "diverged")

#: Tables with a full declared schema.
DECLARED: dict[str, pa.Schema] = {"features": FEATURES, "evals": EVALS, "trials": TRIALS}

#: Aggregation outputs: only these key columns are required, with these types when present.
FREE_KEYS: dict[str, pa.Schema] = {
    "runs": pa.schema([("trial_id", STR)]),
    "summary": pa.schema([]),
    "detection": pa.schema([("detector", STR)]),
}
#: Types checked in free tables whenever the column is present.
FREE_TYPED = pa.schema([("trial_id", STR), ("workload", STR), ("optimizer", STR),
                        ("weight_decay", F64), ("seed", I64)])

TABLES = ("trials", "evals", "features", "runs", "summary", "detection")
STREAMED = ("features", "evals")
#: Tables that aggregation and detection compute from the trials, features and evals tables.
DERIVED = ("runs", "summary", "detection")
PARTITIONED = ("features", "evals", "trials")

#: Columns that older versions wrote and current ones do not: (table, column) → (the tables
#: whose rows the column's presence reinterprets, how to read them). ``edgesweep query`` says
#: so when it reads those tables of such a sweep, so a query over a root that mixes old and new
#: sweeps does not add up counts of two meanings without a word.
RETIRED_COLUMNS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("summary", "hits_with_lead"): (("summary", "runs"), (
        "aggregated before 2026-12-07, when summary `hits` and runs' detector_outcome 'hit' counted an "
        "alarm at the grok step as a hit (now 'late': a hit's alarm is strictly before it); "
        "`edgesweep aggregate` re-derives them where the raw tables are kept")),
}

#: Dedupe keys (the newest attempt wins within each).
DEDUPE_KEYS = {
    "features": ("sweep", "trial_id", "step"),
    "evals": ("sweep", "trial_id", "step"),
    "trials": ("sweep", "trial_id"),
}


def check_table(table: str) -> str:
    """`table` if it is one of :data:`TABLES`, else a StorageError listing them."""
    if table not in TABLES:
        raise StorageError(f"unknown table {table!r}; known tables: {', '.join(TABLES)}")
    return table


def file_schema(table: str) -> pa.Schema | None:
    """The declared columns stored in a file of `table` (partition columns excluded)."""
    return DECLARED.get(check_table(table))


def file_metadata(table: str, **extra: Any) -> dict[bytes, bytes]:
    """Key/value metadata stamped on every file: schema version, table, and provenance."""
    doc = {"schema_version": SCHEMA_VERSION, "table": table}
    doc.update({k: v for k, v in extra.items() if v is not None})
    return {METADATA_KEY: json.dumps(doc, sort_keys=True).encode()}


def read_file_metadata(schema: pa.Schema) -> dict | None:
    """The edgesweep metadata of a file's Arrow schema, or None for a foreign file."""
    meta = schema.metadata or {}
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def type_problems(table: str, schema: pa.Schema) -> list[str]:
    """Why a file's Arrow schema does not fit `table` (empty when it fits).

    Known columns must have their declared type; key columns must be present. Columns the
    reader does not know are accepted (a newer writer added them). Partition columns are stored
    in the files too (the scanner checks them against the file's directory).
    """
    problems = []
    declared = DECLARED.get(table)
    if declared is not None:
        required = ["trial_id", *PARTITION_KEYS] + (["attempt", "step"] if table in STREAMED else [])
        expect = declared
    else:
        required = FREE_KEYS[table].names
        expect = FREE_TYPED
    names = set(schema.names)
    for col in required:
        if col not in names:
            problems.append(f"missing key column {col!r}")
    for field in schema:
        if expect.get_field_index(field.name) >= 0:
            want = expect.field(field.name).type
            if not compatible(field.type, want):
                problems.append(f"column {field.name!r} is {field.type}, expected {want}")
    if len(set(schema.names)) != len(schema.names):
        problems.append("duplicate column names")
    return problems


def compatible(have: pa.DataType, want: pa.DataType) -> bool:
    """Same type, or an all-null column (Arrow ``null`` type), which reads as any type."""
    return have.equals(want) or pa.types.is_null(have)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the columns of `schema`, in its order (missing ones all-null).

    Used where files of different schema versions are combined (compaction); the types of
    columns present are expected to match already (checked by :func:`type_problems`).
    """
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            cols.append(col if col.type.equals(field.type) else col.cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema.remove_metadata())


def union_schema(table: str, schemas: list[pa.Schema]) -> pa.Schema:
    """Declared columns first (declared order), then columns only some files have, typed by
    the first file with a non-null type (the scanner reports files that disagree)."""
    base = DECLARED.get(table, FREE_KEYS.get(table))
    fields = {f.name: f for f in base}
    for s in schemas:
        for f in s:
            seen = fields.get(f.name)
            if seen is None or (pa.types.is_null(seen.type) and not pa.types.is_null(f.type)):
                fields[f.name] = f
    return pa.schema(list(fields.values()))
