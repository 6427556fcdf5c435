"""A prospective, causal grokking detector on the spectral feature stream (DESIGN.md 1.3).

The paper's criterion (``events.g23_precedence``) is retrospective: it knows the grok step and
looks back. Its weight-decay-0 controls also show large g23 declines and count as negatives only
because they never grok. A claim that "gap dynamics precede grokking" deserves trust only if a
rule that sees nothing but the feature stream up to the current step raises an alarm *before*
grokking on grokking runs and stays silent on runs that never grok. This module is that rule and
its scoring.

The rule ("g23 collapse within a stable edge"), evaluated at every feature window in step order:

1. *Warm-up.* No alarm during the first ``warmup_windows`` windows with a finite g23 (g23 exists
   from 3-row windows on). The running peak still sees those windows, like the paper's
   pre-grok maximum, so an early real peak is not thrown away.
2. *Decline.* g23_t ≤ peak_t / ``decline_factor``, where peak_t = max of the finite g23 values
   seen so far (including t), and peak_t > 0.
3. *Stable edge.* The last ``stability_windows`` gap ratios R are all finite and their relative
   standard deviation std/|mean| (population std) is ≤ ``max_rel_std``.
4. *Persistence.* Conditions 2 and 3 hold on ``persistence`` consecutive windows; the alarm is
   raised at the last of them, once (latched). A window with NaN g23 breaks the streak.

Default parameters and why (fixed before any sweep was run; changing them after looking at the
sweep's outcomes turns a prediction into a fit — tune on a held-out set of seeds if at all):

* ``decline_factor = 1.5`` — the paper's own threshold. The detector then asks exactly the
  paper's question, only causally; its hits and false alarms differ from the retrospective
  count because of causality, persistence and the R condition alone, not because of a new
  tuned threshold.
* ``persistence = 3`` windows — one- or two-window dips of a noisy statistic are not a
  collapse; three consecutive windows cost at most two snapshots of lead (200 steps at
  ``every = 100``), small against the thousands of steps over which the paper's 8–111×
  declines develop.
* ``warmup_windows = 5`` — the running peak needs a history before "fallen from its peak"
  means anything. 5 keeps the rule usable on the short pre-grok streams of the paper's
  settings (Dyck at every = 50 has ~12 windows before grokking at step 600).
* ``stability_windows = 5``, ``max_rel_std = 0.25`` — deliberately loose: it vetoes alarms
  only while the edge itself reorganises (a k* jump moves R by factors, rel. std ≫ 0.25),
  because the thesis places the precursor inside a stable edge (R ≈ 2–6 without spikes in the
  Dyck/SCAN runs, 1.39 ± 0.08 across the weight-decay modular runs). Setting it to ``inf``
  turns the condition off.

Everything here is pure Python/numpy; the class's state is a small JSON-able dict so that it can
live in a training checkpoint or a Tune stopper.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .stats import LeadTimeSummary, Proportion, fisher_exact_2x2, lead_time_summary, proportion

__all__ = [
    "DetectorConfig",
    "G23CollapseDetector",
    "first_alarm",
    "RunOutcome",
    "classify_run",
    "DetectorEvaluation",
    "evaluate_detector",
    "compare_arms",
]


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of the g23-collapse rule (see the module docstring for the reasoning)."""

    decline_factor: float = 1.5
    persistence: int = 3
    warmup_windows: int = 5
    stability_windows: int = 5
    max_rel_std: float = 0.25

    def __post_init__(self) -> None:
        if not (self.decline_factor > 1.0 and math.isfinite(self.decline_factor)):
            raise ValueError(f"decline_factor must be a finite number > 1, got {self.decline_factor}")
        for name in ("persistence", "stability_windows"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.warmup_windows, bool) or int(self.warmup_windows) != self.warmup_windows \
                or self.warmup_windows < 0:
            raise ValueError(f"warmup_windows must be an integer >= 0, got {self.warmup_windows!r}")
        if not self.max_rel_std >= 0.0:  # also rejects NaN; inf disables the condition
            raise ValueError(f"max_rel_std must be >= 0, got {self.max_rel_std}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_float(x: Any) -> float:
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _rel_std_rows(w: np.ndarray) -> np.ndarray:
    """Row-wise std/|mean| (population std) of a (rows, L) array; inf where the mean is 0 and
    the std is not. Sums run column by column so the class (one row) and the vectorised
    :func:`first_alarm` (many rows) do bit-identical arithmetic."""
    L = w.shape[1]
    total = np.zeros(w.shape[0])
    for j in range(L):
        total = total + w[:, j]
    mean = total / L
    ss = np.zeros(w.shape[0])
    for j in range(L):
        ss = ss + (w[:, j] - mean) ** 2
    sd = np.sqrt(ss / L)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(mean == 0.0, np.where(sd == 0.0, 0.0, np.inf), sd / np.abs(mean))
    return rel


class G23CollapseDetector:
    """Online g23-collapse alarm. Feed windows in step order with :meth:`update`.

    ``update(step, g23, gap_ratio)`` returns True exactly once: at the window on which the
    alarm fires (then ``alarm_step`` holds that step). Windows whose step is not greater than
    the last one seen are ignored (returns False): a trainer that replays steps after a restore
    without having restored this detector cannot double-count them.
    """

    _STATE_VERSION = 1

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config if config is not None else DetectorConfig()
        self.reset()

    def reset(self) -> None:
        self._last_step: int | None = None
        self._n_valid = 0  # windows with finite g23 seen so far
        self._peak = -math.inf  # running max of finite g23
        self._ratios: deque[float] = deque(maxlen=self.config.stability_windows)
        self._streak = 0
        self._alarm_step: int | None = None

    # -- read-only views -----------------------------------------------------------------
    @property
    def fired(self) -> bool:
        return self._alarm_step is not None

    @property
    def alarm_step(self) -> int | None:
        return self._alarm_step

    @property
    def peak(self) -> float:
        """Running maximum of the finite g23 values seen (−inf before the first)."""
        return self._peak

    # -- the rule ------------------------------------------------------------------------
    def update(self, step: int, g23: float | None, gap_ratio: float | None) -> bool:
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            return False
        self._last_step = step
        if self._alarm_step is not None:
            return False  # latched: the decision is made, later data cannot change it
        cfg = self.config
        g = _as_float(g23)
        self._ratios.append(_as_float(gap_ratio))

        valid = math.isfinite(g)
        if valid:
            self._n_valid += 1
            if g > self._peak:
                self._peak = g
        declined = (
            valid
            and self._n_valid > cfg.warmup_windows
            and self._peak > 0.0
            and g <= self._peak / cfg.decline_factor
        )
        stable = False
        if declined and len(self._ratios) == cfg.stability_windows:
            r = np.fromiter(self._ratios, dtype=float, count=cfg.stability_windows)[None, :]
            stable = bool(np.all(np.isfinite(r))) and bool(_rel_std_rows(r)[0] <= cfg.max_rel_std)
        self._streak = self._streak + 1 if (declined and stable) else 0
        if self._streak >= cfg.persistence:
            self._alarm_step = step
            return True
        return False

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (JSON-able; ±inf/NaN as Python floats). Includes the config so a
        restore under a different rule is refused rather than silently mixed."""
        return {
            "version": self._STATE_VERSION,
            "config": self.config.as_dict(),
            "last_step": self._last_step,
            "n_valid": self._n_valid,
            "peak": self._peak,
            "ratios": list(self._ratios),
            "streak": self._streak,
            "alarm_step": self._alarm_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != self._STATE_VERSION:
            raise ValueError(f"unsupported detector state version {state.get('version')!r}")
        if DetectorConfig(**state["config"]) != self.config:
            raise ValueError(
                f"detector state was saved with config {state['config']}, "
                f"this detector has {self.config.as_dict()}"
            )
        self._last_step = None if state["last_step"] is None else int(state["last_step"])
        self._n_valid = int(state["n_valid"])
        self._peak = float(state["peak"])
        self._ratios = deque((float(r) for r in state["ratios"]), maxlen=self.config.stability_windows)
        self._streak = int(state["streak"])
        self._alarm_step = None if state["alarm_step"] is None else int(state["alarm_step"])


def first_alarm(
    steps: Sequence[int],
    g23: Sequence[float],
    gap_ratio: Sequence[float],
    config: DetectorConfig | None = None,
) -> int | None:
    """Step at which :class:`G23CollapseDetector` would first alarm on this stream, or None.

    steps, g23, gap_ratio: (n,) feature columns of one run, any order. Rows are put in step
    order (stable) and only the first row of a repeated step is kept — what the class does when
    fed in step order. Vectorised independently of the class (tests check they agree), so the
    aggregation can run it over thousands of runs cheaply.
    """
    cfg = config if config is not None else DetectorConfig()
    s = np.asarray(steps).ravel()
    g = np.asarray(g23, dtype=float).ravel()
    r = np.asarray(gap_ratio, dtype=float).ravel()
    if not (s.shape == g.shape == r.shape):
        raise ValueError(f"steps, g23, gap_ratio must have the same length, got {s.size}, {g.size}, {r.size}")
    if s.size == 0:
        return None
    order = np.argsort(s, kind="stable")
    s, g, r = s[order], g[order], r[order]
    keep = np.concatenate([[True], s[1:] != s[:-1]])
    s, g, r = s[keep], g[keep], r[keep]
    n = s.size

    valid = np.isfinite(g)
    n_valid = np.cumsum(valid)
    peak = np.maximum.accumulate(np.where(valid, g, -np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        declined = valid & (n_valid > cfg.warmup_windows) & (peak > 0) & (g <= peak / cfg.decline_factor)

    L = cfg.stability_windows
    stable = np.zeros(n, dtype=bool)
    if n >= L:
        w = sliding_window_view(r, L)
        finite = np.all(np.isfinite(w), axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            rel = _rel_std_rows(w)
        stable[L - 1:] = finite & (rel <= cfg.max_rel_std)

    cond = declined & stable
    m = cfg.persistence
    if n < m:
        return None
    runs = np.all(sliding_window_view(cond, m), axis=1)
    hit = np.flatnonzero(runs)
    return int(s[hit[0] + m - 1]) if hit.size else None


# --------------------------------------------------------------------------------------------
# Scoring a detector over a sweep
# --------------------------------------------------------------------------------------------

HIT, LATE, MISS, FALSE_ALARM, QUIET = "hit", "late", "miss", "false_alarm", "quiet"


@dataclass(frozen=True)
class RunOutcome:
    """One run's detector outcome. lead = grok_step − alarm_step (steps) for alarmed grokkers."""

    alarm_step: int | None
    grok_step: int | None
    outcome: str  # hit | late | miss | false_alarm | quiet
    lead: int | None


def classify_run(alarm_step: int | None, grok_step: int | None) -> RunOutcome:
    """hit: alarm ≤ grok (lead ≥ 0; lead 0 means alarm and grok at the same logged step);
    late: alarm after grok; miss: grokked, no alarm; false_alarm: alarm, never grokked;
    quiet: neither. A non-grokking run is only "never grokked *within its budget*": a false
    alarm on a run that would have grokked later cannot be told apart here."""
    a = None if alarm_step is None else int(alarm_step)
    gk = None if grok_step is None else int(grok_step)
    if gk is None:
        return RunOutcome(a, None, FALSE_ALARM if a is not None else QUIET, None)
    if a is None:
        return RunOutcome(None, gk, MISS, None)
    lead = gk - a
    return RunOutcome(a, gk, HIT if lead >= 0 else LATE, lead)


@dataclass(frozen=True)
class DetectorEvaluation:
    """Detector scored over a set of runs.

    hit_rate: hits / grokked runs; false_alarm_rate: false alarms / non-grokking runs; both
    with exact Clopper–Pearson intervals. ``hits_with_lead`` counts hits with lead > 0 (a
    strictly earlier alarm). ``lead`` summarises lead times of the hits (steps).
    """

    n_runs: int
    n_grokked: int
    n_not_grokked: int
    hits: int
    hits_with_lead: int
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


def _alarm_grok(run: Any) -> tuple[int | None, int | None]:
    if hasattr(run, "alarm_step") and hasattr(run, "grok_step"):
        return run.alarm_step, run.grok_step
    if isinstance(run, dict):
        return run["alarm_step"], run["grok_step"]
    alarm, grok = run
    return alarm, grok


def evaluate_detector(runs: Iterable[Any], conf: float = 0.95) -> DetectorEvaluation:
    """Score alarms against grok steps.

    runs: iterable of (alarm_step, grok_step) pairs, dicts with those keys, or objects with
    those attributes; None means "no alarm" / "never grokked". ``conf`` is the coverage of the
    exact intervals.
    """
    outcomes = tuple(classify_run(*_alarm_grok(r)) for r in runs)
    count = {k: sum(o.outcome == k for o in outcomes) for k in (HIT, LATE, MISS, FALSE_ALARM, QUIET)}
    n_grok = count[HIT] + count[LATE] + count[MISS]
    n_not = count[FALSE_ALARM] + count[QUIET]
    leads = [o.lead for o in outcomes if o.outcome == HIT]
    return DetectorEvaluation(
        n_runs=len(outcomes),
        n_grokked=n_grok,
        n_not_grokked=n_not,
        hits=count[HIT],
        hits_with_lead=sum(1 for v in leads if v > 0),
        late=count[LATE],
        misses=count[MISS],
        false_alarms=count[FALSE_ALARM],
        quiet=count[QUIET],
        hit_rate=proportion(count[HIT], n_grok, conf),
        false_alarm_rate=proportion(count[FALSE_ALARM], n_not, conf),
        lead=lead_time_summary(leads),
        outcomes=outcomes,
    )


def compare_arms(a: DetectorEvaluation, b: DetectorEvaluation, conf: float = 0.95) -> dict[str, Any]:
    """Does the detector alarm more often in arm ``a`` (e.g. weight decay > 0) than in ``b``
    (controls)? Counts runs with *any* alarm (hit, late or false alarm) per arm, their exact
    intervals, and the two-sided Fisher exact test on [[alarmed_a, quiet_a], [alarmed_b, quiet_b]].
    A detector that is only "g23 fell" alarms in both arms (the caveat of DESIGN.md 1.3) and
    shows no contrast here, whatever its hit rate."""
    def alarmed(e: DetectorEvaluation) -> int:
        return e.hits + e.late + e.false_alarms

    ka, kb = alarmed(a), alarmed(b)
    odds, p = fisher_exact_2x2(ka, a.n_runs - ka, kb, b.n_runs - kb)
    pa, pb = proportion(ka, a.n_runs, conf), proportion(kb, b.n_runs, conf)
    return {
        "a_alarmed": ka, "a_n": a.n_runs, "a_rate": pa.rate, "a_ci": [pa.lo, pa.hi],
        "b_alarmed": kb, "b_n": b.n_runs, "b_rate": pb.rate, "b_ci": [pb.lo, pb.hi],
        "fisher_odds_ratio": odds, "fisher_p": p,
    }
