"""What a driver says when Tune returns: counted from the ``trials`` table, never from Tune.

After a Ctrl-C, Tune hands back a result grid in which trials that never started look like
trials without an error, so "N finished, 0 failed" came out although nothing ran. The stored
rows are the truth a later reader sees, so the driver reports those: per trial of the spec,
its latest row's status — finished (completed, stopped, diverged), failed, interrupted (the
row still says running, and nothing runs any more), or never started (no row at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ..storage import StorageError, SweepPath, scan
from ..storage.schema import FINISHED
from .spec import SweepSpec

__all__ = ["SweepOutcome", "sweep_outcome"]


@dataclass
class SweepOutcome:
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    never_started: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.interrupted or self.never_started)

    @property
    def verdict(self) -> str:
        return "interrupted" if not self.complete else "failed" if self.failed else "finished"

    def counts(self) -> dict[str, int]:
        return {"finished": len(self.finished), "failed": len(self.failed),
                "interrupted": len(self.interrupted), "never_started": len(self.never_started)}

    def sentence(self) -> str:
        c = self.counts()
        return (f"{c['finished']} finished, {c['failed']} failed, {c['interrupted']} interrupted, "
                f"{c['never_started']} never started (of {sum(c.values())})")


def sweep_outcome(spec: SweepSpec, storage_uri: str) -> SweepOutcome:
    """Each of the spec's trials by its latest stored status (see the module docstring)."""
    sp = SweepPath.parse(f"{storage_uri.rstrip('/')}/{spec.name}")
    try:
        rows = scan(sp.uri, "trials", on_error="skip").select("trial_id", "status").collect()
        status = dict(zip(rows["trial_id"].to_list(), rows["status"].to_list()))
    except (StorageError, pl.exceptions.PolarsError, OSError):
        status = {}  # no trial wrote its row: none started
    out = SweepOutcome()
    for t in spec.trials:
        s = status.get(t.trial_id)
        (out.never_started if s is None else out.finished if s in FINISHED
         else out.failed if s == "failed" else out.interrupted).append(t.trial_id)
    return out
