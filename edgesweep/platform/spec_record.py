"""The spec a sweep was started with, kept beside its tables as ``<sweep>/_spec.json``.

``--resume`` continues the trials Tune was started with — Tune restores its own copy of every
trial's config, whatever the YAML now says. A YAML edited between the run and the resume would
otherwise be ignored without a word (changed budgets, added seeds, removed blocks). So the
driver records the trials it starts, and a resume compares the spec it is given with that
record and refuses a different one, naming what changed.
"""

from __future__ import annotations

import json

from .spec import SweepSpec

__all__ = ["SPEC_RECORD", "spec_record", "spec_changes", "parse_spec_record", "read_spec_record"]

SPEC_RECORD = "_spec.json"  # hidden from scans (leading '_'), like _driver.json
FORMAT = 1


def spec_record(spec: SweepSpec) -> bytes:
    """What ``_spec.json`` holds: the sweep's name, where the spec came from, and every trial
    as the trainable receives it."""
    return json.dumps({"format": FORMAT, "name": spec.name, "source": spec.source,
                       "trials": [t.as_dict() for t in spec.trials]}, indent=1, sort_keys=True).encode()


def parse_spec_record(raw: bytes) -> dict:
    """``_spec.json``'s document, checked for the shape :func:`spec_changes` reads (a ValueError
    saying what is wrong otherwise: JSON that parses can still be a list, or hold trials without
    ids)."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    trials = doc.get("trials", [])
    if not isinstance(trials, list) or not all(isinstance(t, dict) and isinstance(t.get("trial_id"), str)
                                               for t in trials):
        raise ValueError('"trials" is not a list of trials with a "trial_id" each')
    return doc


def read_spec_record(sp) -> dict | None:
    """The ``_spec.json`` document of the sweep folder ``sp`` (a :class:`SweepPath`); None when
    there is none. An unreadable one, or one of another sweep (copied into this folder), raises
    (StorageError, OSError, or ValueError naming what is wrong): the caller decides whether that
    is a warning or a reason to list nothing."""
    raw = sp.read_bytes(SPEC_RECORD)
    if raw is None:
        return None
    doc = parse_spec_record(raw)
    if doc.get("name") not in (None, sp.sweep):
        raise ValueError(f"it records sweep {doc['name']!r}, not {sp.sweep!r} (copied from another sweep's folder?)")
    return doc


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def spec_changes(recorded: dict, spec: SweepSpec, limit: int = 6) -> list[str]:
    """How ``spec``'s trials differ from a ``_spec.json`` document (its parsed JSON): trials
    added, trials removed, and changed settings of the trials in both, at most ``limit`` lines.
    Empty when they are the same trials."""
    # JSON turns tuples into lists: compare both sides as JSON reads them.
    old = {t["trial_id"]: t for t in recorded.get("trials", [])}
    new = {t["trial_id"]: t for t in json.loads(json.dumps([t.as_dict() for t in spec.trials]))}
    lines = []
    added = [t for t in new if t not in old]
    removed = [t for t in old if t not in new]
    if added:
        lines.append(f"{len(added)} trial(s) added ({', '.join(added[:3])}{', …' if len(added) > 3 else ''})")
    if removed:
        lines.append(f"{len(removed)} trial(s) removed ({', '.join(removed[:3])}{', …' if len(removed) > 3 else ''})")
    changed: dict[tuple, list[str]] = {}  # (key, old, new) → trials
    for tid in (t for t in new if t in old):
        a, b = _flat(old[tid]), _flat(new[tid])
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                changed.setdefault((key, json.dumps(a.get(key)), json.dumps(b.get(key))), []).append(tid)
    for (key, was, now), tids in changed.items():
        lines.append(f"{key}: {was} → {now} in {len(tids)} trial(s) ({tids[0]}{', …' if len(tids) > 1 else ''})")
    return lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])
