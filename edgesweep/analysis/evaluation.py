"""Scoring alarms against grok steps over a set of runs: hits, false alarms, lead times, and
the contrast between weight-decay arms. Pure Python/numpy; the inputs are ``runs`` rows or
(alarm_step, grok_step) pairs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .stats import LeadTimeSummary, Proportion, fisher_exact_2x2, lead_time_summary, proportion

__all__ = ["HIT", "LATE", "MISS", "FALSE_ALARM", "QUIET", "RunOutcome", "classify_run",
           "DetectorEvaluation", "evaluate_detector", "compare_arms"]

HIT, LATE, MISS, FALSE_ALARM, QUIET = "hit", "late", "miss", "false_alarm", "quiet"


@dataclass(frozen=True)
class RunOutcome:
    """One run's detector outcome. lead = grok_step − alarm_step (steps) for alarmed grokkers."""

    alarm_step: int | None
    grok_step: int | None
    outcome: str  # hit | late | miss | false_alarm | quiet
    lead: int | None


def classify_run(alarm_step: int | None, grok_step: int | None) -> RunOutcome:
    """hit: alarm strictly before grok (lead > 0); late: alarm at or after grok (an alarm at the
    grok's logged step warns of nothing; lead ≤ 0); miss: grokked, no alarm; false_alarm: alarm,
    never grokked; quiet: neither. The one definition of a hit: the runs table, the summary and
    the early-warning benchmark (``detection``) all classify through here. A non-grokking run
    is only "never grokked *within its budget*": a false alarm on a run that would have grokked
    later cannot be told apart here."""
    a = None if alarm_step is None else int(alarm_step)
    gk = None if grok_step is None else int(grok_step)
    if gk is None:
        return RunOutcome(a, None, FALSE_ALARM if a is not None else QUIET, None)
    if a is None:
        return RunOutcome(None, gk, MISS, None)
    lead = gk - a
    return RunOutcome(a, gk, HIT if lead > 0 else LATE, lead)


@dataclass(frozen=True)
class DetectorEvaluation:
    """Detector scored over a set of runs.

    hit_rate: hits / grokked runs; false_alarm_rate: false alarms / non-grokking runs; both
    with exact Clopper–Pearson intervals. ``lead`` summarises lead times of the hits (steps,
    all > 0).
    """

    n_runs: int
    n_grokked: int
    n_not_grokked: int
    hits: int
    late: int
    misses: int
    false_alarms: int
    quiet: int
    hit_rate: Proportion
    false_alarm_rate: Proportion
    lead: LeadTimeSummary
    outcomes: tuple[RunOutcome, ...] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcomes"] = [asdict(o) for o in self.outcomes]
        return d


def evaluate_detector(runs: Iterable[Any], conf: float = 0.95) -> DetectorEvaluation:
    """Score alarms against grok steps.

    runs: iterable of (alarm_step, grok_step) pairs; None means "no alarm" / "never grokked".
    ``conf`` is the coverage of the exact intervals.
    """
    outcomes = tuple(classify_run(alarm, grok) for alarm, grok in runs)
    count = {k: sum(o.outcome == k for o in outcomes) for k in (HIT, LATE, MISS, FALSE_ALARM, QUIET)}
    n_grok = count[HIT] + count[LATE] + count[MISS]
    n_not = count[FALSE_ALARM] + count[QUIET]
    leads = [o.lead for o in outcomes if o.outcome == HIT]
    return DetectorEvaluation(
        n_runs=len(outcomes),
        n_grokked=n_grok,
        n_not_grokked=n_not,
        hits=count[HIT],
        late=count[LATE],
        misses=count[MISS],
        false_alarms=count[FALSE_ALARM],
        quiet=count[QUIET],
        hit_rate=proportion(count[HIT], n_grok, conf),
        false_alarm_rate=proportion(count[FALSE_ALARM], n_not, conf),
        lead=lead_time_summary(leads),
        outcomes=outcomes,
    )


def compare_arms(a: DetectorEvaluation, b: DetectorEvaluation) -> tuple[float, float]:
    """Does the detector alarm more often in arm ``a`` (weight decay > 0) than in ``b``
    (controls)? (odds ratio, two-sided p) of the Fisher exact test on runs with *any* alarm
    (hit, late or false alarm): [[alarmed_a, quiet_a], [alarmed_b, quiet_b]]. A detector that is
    only "g23 fell" alarms in both arms (DESIGN.md 1.3) and shows no contrast, whatever its hit
    rate."""
    ka, kb = (e.hits + e.late + e.false_alarms for e in (a, b))
    return fisher_exact_2x2(ka, a.n_runs - ka, kb, b.n_runs - kb)
