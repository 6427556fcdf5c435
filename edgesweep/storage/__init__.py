"""edgesweep.storage — Parquet tables of a sweep: crash-safe streaming, compaction, queries.

Layout: ``<root>/<sweep>/<table>/workload=…/optimizer=…/weight_decay=…/<files>`` for the
streamed ``features``/``evals`` and the per-trial ``trials`` rows, ``<root>/<sweep>/<table>/
<table>.parquet`` for the aggregation outputs ``runs``/``summary``. ``root`` is a local path
or ``s3://bucket/prefix``. No Ray, no torch.

Write::

    w = TrialWriter(root, "grokking", trial_id, attempt,
                    {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 1.0})
    w.add("features", row); w.add("evals", row)
    w.flush()        # at every checkpoint, *before* saving it
    w.compact()      # when the trial has finished
    write_table(root, "grokking", "trials", df)   # trials / runs / summary, atomic replace

Read::

    scan(root, "features")            # polars.LazyFrame, one row per (sweep, trial_id, step)
    query(root, "SELECT … FROM evals JOIN trials USING (sweep, trial_id)")
"""

from .compact import compact_sweep, compact_trial
from .errors import StorageError, StorageWarning
from .fs import resolve_root
from .query import query, query_main
from .scan import scan
from .schema import PARTITION_KEYS, SCHEMA_VERSION, TABLES
from .writer import TrialWriter, write_table

__all__ = [
    "TrialWriter", "write_table", "compact_trial", "compact_sweep", "scan", "query",
    "query_main", "StorageError", "StorageWarning", "resolve_root", "TABLES", "PARTITION_KEYS",
    "SCHEMA_VERSION",
]
