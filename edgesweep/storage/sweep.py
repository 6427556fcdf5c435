"""One sweep's folder, and the per-trial bookkeeping that the platform and the analysis share.

* :class:`SweepPath` — ``ROOT/SWEEP`` parsed once (local or s3://): the root the tables are
  written under, the sweep name, and small whole files next to the tables (reports, JSON).
* :func:`next_attempt` — the attempt number a (re)starting trial writes under: one more than
  any attempt whose parts are on disk, so replayed rows always win on read.
* :func:`recorded_trial` — a trial's row of the ``trials`` table (its own file), or None.
* :func:`trials_in_data` — trials that wrote ``features``/``evals`` parts, with their
  partition, found by file names alone: a trial whose ``trials`` row never got written must not
  vanish from an aggregate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .checks import holds_a_table
from .errors import StorageError
from .fs import Root, resolve_root
from .layout import (check_name, is_hidden, parse_part_name, parse_partition_dirs, table_dir,
                     trial_file_name)
from .schema import DERIVED, PARTITION_KEYS, STREAMED

__all__ = ["SweepPath", "next_attempt", "recorded_trial", "trials_in_data"]


@dataclass(frozen=True)
class SweepPath:
    """One sweep folder: ``root`` (its parent, where ``write_table`` writes) and ``sweep``."""

    text: str          # as the user gave it
    root: Root         # the parent folder (a storage root)
    sweep: str

    @classmethod
    def parse(cls, path: str | os.PathLike) -> "SweepPath":
        text = os.fspath(path)
        folder = resolve_root(text)
        parent, _, sweep = folder.base.rstrip("/").rpartition("/")
        if not sweep or (folder.is_s3 and not parent):
            raise StorageError(f"{text}: expected a sweep folder ROOT/SWEEP "
                               f"(e.g. results/grokking or s3://bucket/prefix/grokking)", text)
        try:
            check_name("sweep", sweep)
        except ValueError as exc:
            if parent and holds_a_table(folder, parent):
                # …/SWEEP/features or …/SWEEP/_tune: renaming it would break the sweep
                raise StorageError(f"{text}: it is the {sweep!r} folder inside sweep {folder.display(parent)}: "
                                   "give that sweep's folder", text) from None
            # A renamed copy ("grokking (copy)") is the usual case: the folder's name is the
            # sweep's name, written into its tables and paths, so the folder must carry a valid one.
            raise StorageError(f"{text}: {exc}; a sweep folder's name is its sweep's name — copy or rename "
                               "the folder to a valid one", text) from None
        return cls(text, folder.with_base(parent or "/"), sweep)

    @property
    def dir(self) -> str:
        """The sweep folder as the root's filesystem spells it."""
        return self.root.path(self.sweep)

    @property
    def uri(self) -> str:
        """The sweep folder as ``scan`` / Polars take it (local path or s3://…)."""
        return self.root.uri(self.dir)

    def file(self, *parts: str) -> str:
        return self.root.path(self.sweep, *parts)

    def check(self) -> None:
        """StorageError naming the path unless this is a sweep folder with some table in it."""
        info = self.root.info(self.dir)
        if info.type != pafs.FileType.Directory:
            why = "the folder does not exist" if info.type == pafs.FileType.NotFound else "not a folder"
            raise StorageError(f"no sweep at {self.uri}: {why}", self.uri)
        children = [c for c in self.root.list_dirs(self.dir) if not is_hidden(c)]
        if not set(children) & {"trials", *STREAMED}:
            derived = [c for c in children if c in DERIVED]
            if derived:  # never in a storage root: sweeps cannot be named like tables
                hint = (f" (it holds {', '.join(derived)}: the aggregation's outputs, without the raw "
                        f"tables they were computed from)")
            else:
                sweeps = [c for c in children[:50]
                          if {"trials", *STREAMED} & set(self.root.list_dirs(self.root.path(self.sweep, c)))]
                if sweeps:  # a storage root: name the command's argument the user meant
                    many = len(sweeps) > 1
                    hint = (f" — it is a storage root holding the sweep folder{'s' if many else ''} "
                            f"{', '.join(sweeps[:5])}{', …' if len(sweeps) > 5 else ''}: "
                            f"pass {'one of them' if many else 'it'}, e.g. {self.text.rstrip('/')}/{sweeps[0]}")
                else:
                    hint = (f" (it holds {', '.join(children[:5])}: if this is a storage root, pass ROOT/SWEEP)"
                            if children else "")
            raise StorageError(f"no sweep at {self.uri}: no trials/, features/ or evals/ table in it{hint}",
                               self.uri)

    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write ``<sweep>/<relpath>`` whole and atomically (a reader never sees a half-written
        report): temp file + fsync + rename locally, one object on S3. Returns its URI."""
        return self.root.uri(self.root.write_bytes(self.file(relpath), data))

    def read_bytes(self, relpath: str) -> bytes | None:
        """``<sweep>/<relpath>`` or None when it does not exist."""
        path = self.file(relpath)
        if not self.root.exists(path):
            return None
        with self.root.fs.open_input_stream(path) as f:
            return f.read()


def next_attempt(root, sweep: str, trial_id: str, partition: dict) -> int:
    """1 + the highest attempt this trial has written (0 for a new trial)."""
    r = resolve_root(root)
    best = -1
    for table in STREAMED:
        for info in r.list_files(r.path(table_dir(sweep, table, partition))):
            part = parse_part_name(info.base_name)
            if part is not None and part.trial_id == trial_id:
                best = max(best, part.attempt)
    return best + 1


def recorded_trial(root, sweep: str, trial_id: str, partition: dict) -> dict | None:
    """This trial's row in the ``trials`` table (its own file), or None."""
    r = resolve_root(root)
    path = r.path(table_dir(sweep, "trials", partition), trial_file_name(trial_id))
    if not r.exists(path):
        return None
    rows = pq.read_table(path, filesystem=r.fs).to_pylist()
    return rows[-1] if rows else None


def trials_in_data(sp: SweepPath) -> dict[str, dict]:
    """{trial_id: partition} of every trial with a part in ``features`` or ``evals``."""
    found: dict[str, dict] = {}
    for table in STREAMED:
        tdir = sp.file(table)
        for info in sp.root.list_files(tdir):
            rel = info.path[len(tdir) + 1:].split("/")
            if len(rel) != len(PARTITION_KEYS) + 1 or any(is_hidden(p) for p in rel):
                continue
            part, partition = parse_part_name(rel[-1]), parse_partition_dirs(rel[:-1])
            if part is not None and partition is not None:
                found.setdefault(part.trial_id, partition)
    return found
