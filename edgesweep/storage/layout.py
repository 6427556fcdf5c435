"""Where files live and what their names mean. Pure string functions, no I/O.

Layout::

    <root>/<sweep>/<table>/workload=<w>/optimizer=<o>/weight_decay=<float>/<file>   (features,
                                                                                     evals, trials)
    <root>/<sweep>/<table>/<table>.parquet                                           (runs, summary)

File names (the name is the catalogue: a reader decides what is live from names alone):

* streamed part:   ``<trial>.a<attempt>.s<lo>-<hi>.parquet`` — rows of one flush of one attempt,
  steps lo..hi inclusive;
* compacted file:  ``<trial>.c<attempt>.s<lo>-<hi>.parquet`` — every row of the trial over steps
  lo..hi from attempts ≤ attempt, deduplicated and sorted by step;
* trial row:       ``<trial>.parquet`` (trials table);
* in-flight write: ``.<name>.tmp-<random>`` — leading dot and no ``.parquet`` suffix, so neither
  edgesweep's listing nor a ``*.parquet`` glob ever picks it up.

Numbers are zero-padded so that a plain ``ls`` lists a trial's parts in step order.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass

from .schema import PARTITION_KEYS, PARTITIONED, TABLES

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,+=-]*$")
_PART = re.compile(r"^(?P<trial>.+)\.(?P<kind>[ac])(?P<attempt>\d+)\.s(?P<lo>\d+)-(?P<hi>\d+)\.parquet$")
_TRIAL_FILE = re.compile(r"^(?P<trial>.+)\.parquet$")
STEP_DIGITS = 10
ATTEMPT_DIGITS = 3
#: A file name's limit on the usual local file systems (ext4, xfs, btrfs, APFS, NTFS: 255).
NAME_MAX = 255


def check_name(kind: str, value: str) -> str:
    """Names that become path components: a letter or digit, then letters, digits and
    ``_ . , + = -``.

    Refusing anything else (``/``, spaces, ``%``…) keeps paths identical on local disks and S3
    and keeps hive partition parsing free of escaping rules; a leading ``.`` or ``_`` would
    make the file hidden from readers (see :func:`is_hidden`).
    """
    if kind == "sweep" and isinstance(value, str):
        # A sweep folder sits next to other sweeps in a root: a table name there would make
        # the root look like one sweep's folder to readers (hiding every other sweep), and
        # ``_…``/``.…`` names are folders of edgesweep and Tune themselves (``_tune``,
        # ``_sealed``) or hidden. Compared case-insensitively: some file systems are.
        if value.lower() in TABLES or value.startswith(("_", ".")):
            raise ValueError(f"sweep name {value!r} is reserved: sweep names cannot be a table "
                             f"name ({', '.join(TABLES)}, in any case) or start with '_' or '.'")
    if not isinstance(value, str) or not _SAFE.match(value):
        raise ValueError(f"{kind} {value!r} is not a valid name: start with a letter or digit, "
                         f"then letters, digits and _.,+=- (no '/')")
    if kind == "trial_id" and len(value) > TRIAL_ID_MAX:
        raise ValueError(f"trial id {value[:60]}… is {len(value)} characters; at most {TRIAL_ID_MAX} fit in "
                         f"the file names made from it ({NAME_MAX} characters each)")
    return value


def canonical_float(value) -> str:
    """The path text of a float partition value: Python's repr of the float (1.0, 0.0, 0.1, 1e-05).

    repr round-trips exactly, so the value read back from the path equals the value written.
    """
    if isinstance(value, bool):
        raise ValueError(f"weight_decay must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"weight_decay must be finite, got {value!r}")
    if x == 0.0:
        x = 0.0  # -0.0 and 0.0 are one partition
    return repr(x)


def partition_dirs(partition: dict) -> list[str]:
    """``["workload=…", "optimizer=…", "weight_decay=…"]`` from a partition dict."""
    missing = [k for k in PARTITION_KEYS if k not in partition]
    extra = [k for k in partition if k not in PARTITION_KEYS]
    if missing or extra:
        raise ValueError(f"partition needs exactly the keys {PARTITION_KEYS}; "
                         f"missing {missing}, unexpected {extra}")
    return [f"workload={check_name('workload', partition['workload'])}",
            f"optimizer={check_name('optimizer', partition['optimizer'])}",
            f"weight_decay={canonical_float(partition['weight_decay'])}"]


def parse_partition_dirs(parts: list[str]) -> dict | None:
    """Inverse of :func:`partition_dirs`; None when the directories are not a valid partition."""
    if len(parts) != len(PARTITION_KEYS):
        return None
    out = {}
    for key, part in zip(PARTITION_KEYS, parts):
        k, sep, v = part.partition("=")
        if not sep or k != key or not v:
            return None
        out[k] = v
    try:
        wd = float(out["weight_decay"])
    except ValueError:
        return None
    if not math.isfinite(wd) or canonical_float(wd) != out["weight_decay"]:
        return None
    out["weight_decay"] = wd
    return out


def table_dir(sweep: str, table: str, partition: dict | None = None) -> str:
    """Relative directory of a table (and partition) inside a root."""
    check_name("sweep", sweep)
    parts = [sweep, table]
    if table in PARTITIONED:
        if partition is None:
            raise ValueError(f"table {table!r} is partitioned; a partition is required")
        parts += partition_dirs(partition)
    return "/".join(parts)


def part_name(trial_id: str, attempt: int, lo: int, hi: int, compacted: bool = False) -> str:
    kind = "c" if compacted else "a"
    return (f"{trial_id}.{kind}{attempt:0{ATTEMPT_DIGITS}d}"
            f".s{lo:0{STEP_DIGITS}d}-{hi:0{STEP_DIGITS}d}.parquet")


def trial_file_name(trial_id: str) -> str:
    return f"{check_name('trial_id', trial_id)}.parquet"


def temp_name(final_name: str) -> str:
    return f".{final_name}.tmp-{uuid.uuid4().hex[:12]}"


#: The longest trial id whose every file name fits NAME_MAX. The longest of them is a compacted
#: part's temp file, ``.<id>.c000.s<10 digits>-<10 digits>.parquet.tmp-<12 hex>``.
TRIAL_ID_MAX = NAME_MAX - len(temp_name(part_name("", 0, 0, 0, compacted=True)))


def is_hidden(name: str) -> bool:
    """In-flight temp files and other hidden entries (``.x``, ``_SUCCESS``) are never data."""
    return name.startswith((".", "_"))


@dataclass(frozen=True)
class PartName:
    trial_id: str
    compacted: bool
    attempt: int
    lo: int
    hi: int

    def covers(self, other: "PartName") -> bool:
        """A compacted file supersedes a file of the same trial when it holds every attempt
        the other holds (attempt ≤ ours) over a step range inside ours."""
        return (self.compacted and self != other
                and other.trial_id == self.trial_id
                and other.attempt <= self.attempt
                and self.lo <= other.lo and other.hi <= self.hi)


def parse_part_name(name: str) -> PartName | None:
    m = _PART.match(name)
    if not m:
        return None
    lo, hi = int(m["lo"]), int(m["hi"])
    if lo > hi:
        return None
    return PartName(m["trial"], m["kind"] == "c", int(m["attempt"]), lo, hi)


def parse_trial_file_name(name: str) -> str | None:
    m = _TRIAL_FILE.match(name)
    if not m or parse_part_name(name) is not None:
        return None
    return m["trial"]


def live_parts(names: list[PartName]) -> set[PartName]:
    """The parts a reader should read: every part not covered by a compacted file.

    Two compacted files never cover each other unless one's (attempts, range) includes the
    other's; identical names are one file. Cost: parts × compacted files of each trial (a
    trial has at most a few compacted files).
    """
    by_trial: dict[str, list[PartName]] = {}
    for p in names:
        by_trial.setdefault(p.trial_id, []).append(p)
    live = set()
    for parts in by_trial.values():
        compacted = [p for p in parts if p.compacted]
        for p in parts:
            if not any(c.covers(p) for c in compacted):
                live.add(p)
    return live


def check_partition_dict(partition: dict) -> dict:
    """Validated copy with weight_decay as float."""
    partition_dirs(partition)
    return {"workload": partition["workload"], "optimizer": partition["optimizer"],
            "weight_decay": float(canonical_float(partition["weight_decay"]))}
