"""edgesweep.storage — Parquet tables of a sweep: crash-safe streaming, integrity you can check,
compaction, queries.

Layout: ``<root>/<sweep>/<table>/workload=…/optimizer=…/weight_decay=…/<files>`` for the
streamed ``features``/``evals`` and the per-trial ``trials`` rows, ``<root>/<sweep>/<table>/
<table>.parquet`` for the aggregation outputs ``runs``/``summary``; next to the files, in a
hidden ``_sealed/`` folder, the sealed-file records (:mod:`.records`). ``root`` is a local
path, a ``file:`` URI, ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (anything else is
refused, listing :data:`ACCEPTED`). Sweep names cannot be a table name or start with ``_``/``.``.
No Ray, no torch.

Write::

    w = TrialWriter(root, "grokking", trial_id, attempt,
                    {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 1.0})
    w.add("features", row); w.add("evals", row)
    w.flush()        # at every checkpoint, *before* saving it
    w.compact()      # when the trial has finished
    write_table(root, "grokking", "trials", df)   # trials / runs / summary, atomic replace

Every Parquet file is written with page checksums and listed — rows, bytes, sha256, step
range — in a record rewritten atomically before and after its seal. A write that fails (a full
disk, a lost connection) raises :class:`StorageError` naming the file and leaves no partial
file under its name.

Read::

    scan(root, "features")            # polars.LazyFrame, one row per (sweep, trial_id, step)
    scan(root, "features", on_error="skip")   # bad files left out, one StorageWarning each
    query(root, "SELECT … FROM evals JOIN trials USING (sweep, trial_id)")

``scan`` checks every file it will read against its record (size, sha256 of the bytes — Polars
does not verify page checksums —, row count) and its footer, and finds recorded files that
are gone; a bad file raises :class:`StorageError` naming it (``exc.paths``), or is skipped with
a warning. ``verify_content=False`` skips the hash (one read of every file).

Check (for an aggregation: keep damaged trials out of the counts)::

    report = check_sweep(root, "grokking")      # IntegrityReport, never raises for damage
    report.ok, report.damaged_trials()          # {"mod_add-adamw-wd1.0-s42", …}
    for p in report.problems: print(p.line())   # "<path>: missing: sealed (…) but not found"
    verify(root)                                # every sweep and table, pages decoded too
    verify_main(["ROOT"])                       # `edgesweep verify ROOT`: exit 1 on damage

Problem kinds: ``missing``, ``truncated``, ``corrupt``, ``unrecorded``, ``invalid`` (damage);
``legacy`` (written before records: readable, not checkable; a warning); ``interrupted`` (a seal
that never completed, never acknowledged to the trainer; a note). See :mod:`.integrity`.
"""

from .checks import Problem
from .compact import compact_sweep, compact_trial
from .errors import StorageError, StorageWarning
from .fs import ACCEPTED, resolve_root
from .integrity import IntegrityReport, check_sweep, verify, verify_main
from .query import query, query_main
from .scan import scan
from .schema import PARTITION_KEYS, SCHEMA_VERSION, TABLES
from .sweep import SweepPath, next_attempt, recorded_trial, trials_in_data
from .writer import TrialWriter, write_table

__all__ = [
    "TrialWriter", "write_table", "compact_trial", "compact_sweep", "scan", "query",
    "query_main", "StorageError", "StorageWarning", "resolve_root", "TABLES", "PARTITION_KEYS",
    "SCHEMA_VERSION", "SweepPath", "next_attempt", "recorded_trial", "trials_in_data", "check_sweep",
    "verify", "verify_main", "IntegrityReport", "Problem", "ACCEPTED",
]
