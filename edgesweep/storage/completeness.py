"""How far a finished trial's stored rows must reach: one rule for ``verify`` (storage) and the
aggregation (``analysis.record``).

A trial's ``trials`` row is written after its last rows are sealed, so a completed or stopped
trial has an evaluation at the step its row records, and a features row at its last snapshot.
No file check sees a part deleted together with its seal record, or a whole table folder gone;
this rule does — without it a sweep whose ``features`` were deleted verifies OK and aggregates to
"preceded in 0/87" (every run without windows).
"""

from __future__ import annotations

import json

__all__ = ["FINISHED", "last_snapshot", "snapshot_every", "shortfall"]

#: Statuses of a trial that ended normally: its trials row is its last write.
FINISHED = ("completed", "stopped")


def snapshot_every(config_json: str | None) -> int | None:
    """``monitor.every`` from a trials row's resolved config; None when it is missing or not
    a positive integer (rows written by hand, or before the config was recorded)."""
    try:
        conf = json.loads(config_json) if config_json else {}
    except (TypeError, ValueError):
        return None
    mon = conf.get("monitor") if isinstance(conf, dict) else None
    every = mon.get("every") if isinstance(mon, dict) else None
    return every if isinstance(every, int) and not isinstance(every, bool) and every >= 1 else None


def last_snapshot(steps: int, every: int, last_nonfinite: int | None = None) -> int | None:
    """Step of the last features row of a trial that ran ``steps`` steps with a snapshot every
    ``every``; None when it has none. The monitor writes a row from the third snapshot on
    (step 0 seeds it, a window needs two updates: the first row is at ``2 * every``), and after
    a non-finite update at ``last_nonfinite`` (whose row it writes) it starts again the same
    way: no rows for the next two snapshots."""
    last = steps - steps % every
    if last_nonfinite is not None and last_nonfinite <= last < last_nonfinite + 3 * every:
        return last_nonfinite
    return last if last >= 2 * every else None


def shortfall(status: str | None, steps: int | None, last_eval: int | None, last_feature: int | None,
              every: int | None, last_nonfinite: int | None = None) -> tuple[str, str] | None:
    """(table, why) when a finished trial's stored rows end before its trials row says it got;
    None when they reach it, or the trial did not finish normally (running, failed, diverged:
    no rule says where its rows end). ``every`` None skips the features check;
    ``last_nonfinite``: the step of its last non-finite features row, if any."""
    if status not in FINISHED or steps is None:
        return None
    said = f"its trials row says {status} at step {steps} but"
    if last_eval != steps:
        return "evals", f"{said} {'it has no evaluations' if last_eval is None else f'its evaluations end at {last_eval}'}"
    want = last_snapshot(steps, every, last_nonfinite) if every is not None else None
    if want is not None and last_feature != want:
        seen = "it has no features rows" if last_feature is None else f"its features end at step {last_feature}"
        return "features", f"{said} {seen} (a snapshot every {every} steps: the last row at {want})"
    return None
