"""Sealed-file records: what each writer sealed, so readers can tell a good file from a missing,
truncated, corrupt or stray one.

Names alone (:mod:`.layout`) say which files *should be read*; they cannot say that a file
is absent that should be there, or that a file holds other bytes than were written. So every
Parquet file edgesweep writes is listed in a small JSON *record* next to it, in the hidden
folder ``_sealed/`` of its directory::

    <sweep>/<table>/<partition>/_sealed/<trial>.a003.json                 parts of attempt 3
    <sweep>/<table>/<partition>/_sealed/<trial>.c003.s<lo>-<hi>.json      one compacted file
    <sweep>/trials/<partition>/_sealed/<trial>.row.json                   a trial's trials row
    <sweep>/runs/_sealed/runs.table.json                                  (summary likewise)

A record lists, per file: ``name``, ``rows``, ``bytes``, ``sha256`` of the whole file, the step
range ``lo``/``hi`` (streamed tables) and a ``state``. The record's own ``digest`` (sha256 of
its canonical JSON without the digest) makes a damaged record an error of its own rather than
a reason to distrust good files. The sealed file names its record in its footer metadata
(``"record": "a003"``), so a file whose record was lost is told apart from a file written
before records existed (*legacy*: readable, but nothing can be checked against it).

One record object per writer: only the writer of attempt 3 writes ``….a003.json``, and a
compaction writes only its own ``….c….json``, so no record is ever updated by two processes
(S3 has no atomic read-modify-write without conditional writes; this needs none).

The protocol (:func:`seal_recorded`), for every file:

1. rewrite the record with the new entry in state ``sealing`` (what is about to exist — its
   size and hash are known: the file is serialised in memory first);
2. seal the file (atomic: :meth:`.fs.Root.write_bytes`);
3. rewrite the record with the entry ``sealed``.

Each rewrite is atomic (temp + fsync + rename locally, one object on S3). A crash after 1
leaves ``sealing`` and no file: an interrupted seal, which the writer never acknowledged (its
``flush()`` did not return, the checkpoint after it was never saved, so a new attempt replays
those rows) — a note, not damage. A crash after 2 leaves ``sealing`` and a file whose bytes
match: as good as sealed. An entry that replaces a file of the same name (a trials row, a
retried flush) keeps the old file's size and hash as ``previous`` while ``sealing``, so the
old file still verifies until the new one lands. Anything else is damage.

Compaction (:mod:`.compact`) seals the compacted file under its own record the same way, then
deletes the files it supersedes and removes their entries from the other records of the
trial (deleting records left empty). An entry whose file is superseded by a compacted file
that is sealed or present is *retired*: not expected to exist, whatever stage of the clean-up
a crash interrupted.

Cost: two small record writes per sealed file, i.e. at checkpoint cadence; readers read one
small JSON per writer (after compaction: one per trial and table).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace

from .fs import Root
from .layout import parse_part_name

RECORD_DIR = "_sealed"
FORMAT = 1
SEALING, SEALED = "sealing", "sealed"

#: Keys of record files: parts of one attempt, one compacted file, a trials row, a whole table.
_RECORD = re.compile(r"^(?P<owner>.+)\.(?P<key>a\d+|c\d+\.s\d+-\d+|row|table)\.json$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One sealed file as its writer produced it."""

    name: str
    rows: int
    bytes: int
    sha256: str
    lo: int | None = None
    hi: int | None = None
    state: str = SEALED
    previous: dict | None = None   # {"bytes", "sha256", "rows"} of the file it replaces (sealing)

    def versions(self) -> list[dict]:
        """The files this entry accepts: its own and, while sealing, the one it replaces."""
        own = {"bytes": self.bytes, "sha256": self.sha256, "rows": self.rows}
        return [own, self.previous] if self.state == SEALING and self.previous else [own]

    def matching(self, size: int, digest: str | None = None) -> list[dict]:
        """The versions a file of `size` bytes (and sha256 `digest`, when known) may be."""
        return [v for v in self.versions()
                if v["bytes"] == size and (digest is None or v["sha256"] == digest)]


def entry_for(name: str, data: bytes, rows: int, lo: int | None = None,
              hi: int | None = None) -> Entry:
    return Entry(name=name, rows=rows, bytes=len(data), sha256=sha256(data), lo=lo, hi=hi)


@dataclass
class Record:
    """The record object of one writer (see the module docstring)."""

    table: str
    sweep: str
    owner: str                     # trial id (features, evals, trials) or the table name
    key: str                       # "a003", "c003.s…-…", "row", "table"
    partition: dict | None = None
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return record_file_name(self.owner, self.key)

    def to_bytes(self) -> bytes:
        body = {"format": FORMAT, "table": self.table, "sweep": self.sweep, "owner": self.owner,
                "key": self.key, "partition": self.partition,
                "files": [_entry_json(e) for _, e in sorted(self.entries.items())]}
        return json.dumps({**body, "digest": _digest(body)}, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Record":
        """Parse a record file; ``ValueError`` saying what is wrong with it."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a JSON record ({exc})") from exc
        if not isinstance(doc, dict) or "digest" not in doc:
            raise ValueError("not an edgesweep sealed-file record")
        body = {k: v for k, v in doc.items() if k != "digest"}
        if _digest(body) != doc["digest"]:
            raise ValueError("record digest mismatch: the record itself is damaged")
        if body.get("format") != FORMAT:
            raise ValueError(f"record format {body.get('format')!r}, this reader knows {FORMAT}")
        try:
            entries = {e["name"]: Entry(**e) for e in body["files"]}
            return cls(body["table"], body["sweep"], body["owner"], body["key"],
                       body.get("partition"), entries)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed record ({exc})") from exc


def _entry_json(e: Entry) -> dict:
    return {k: v for k, v in asdict(e).items() if v is not None}


def _digest(body: dict) -> str:
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def record_file_name(owner: str, key: str) -> str:
    return f"{owner}.{key}.json"


def parse_record_file_name(name: str) -> tuple[str, str] | None:
    m = _RECORD.match(name)
    return (m["owner"], m["key"]) if m else None


def record_path(r: Root, directory: str, record: Record) -> str:
    return f"{directory}/{RECORD_DIR}/{record.file_name}"


def write_record(r: Root, directory: str, record: Record) -> None:
    r.write_bytes(record_path(r, directory, record), record.to_bytes())


def seal_recorded(r: Root, directory: str, record: Record, entry: Entry, data: bytes) -> str:
    """Seal `data` as ``directory/entry.name``, listed in `record` before and after (the
    protocol of the module docstring). Returns the file's path."""
    old = record.entries.get(entry.name)
    previous = None
    if old is not None:
        previous = ({"bytes": old.bytes, "sha256": old.sha256, "rows": old.rows}
                    if old.state == SEALED
                    else old.previous)  # a seal interrupted earlier: the last file that landed
    record.entries[entry.name] = replace(entry, state=SEALING, previous=previous)
    write_record(r, directory, record)
    path = r.write_bytes(f"{directory}/{entry.name}", data)
    record.entries[entry.name] = replace(entry, state=SEALED, previous=None)
    write_record(r, directory, record)
    return path


def retired(entry_name: str, compacted: list[str]) -> bool:
    """Whether the file `entry_name` is superseded by one of the `compacted` file names (by
    the readers' rule, :meth:`.layout.PartName.covers`)."""
    part = parse_part_name(entry_name)
    if part is None:
        return False
    return any(c.covers(part) for c in (parse_part_name(n) for n in compacted) if c is not None)
