"""The early-warning benchmark: a detector judged the way a sceptic would (DESIGN.md 1.3).

Labels (:func:`label_runs`), from each run's evaluations alone (``events.classify_generalisation``):

* positive — the run grokked: delayed generalisation;
* negative — censored: no grok by its last step; *hard* when its weight decay is > 0 and it was
  observed for at least ``hard_factor`` × the longest positive's grok step;
* excluded — immediate (generalised without a delay), diverged, a trial that failed or is still
  running, and a grok the run was not followed for ``post_grok`` steps after (its grok came
  within the last steps of its budget): no evidence about an *early* warning either way.

Scoring one detector (:func:`evaluate`): it is replayed over every run's stored rows in the
trainer's order (identical to the online alarm, tested). A *hit* is an alarm strictly before the
grok step (an alarm at the grok step warns of nothing); a *late* alarm comes at or after it; a
*false alarm* is any alarm on a negative. Lead = grok − alarm, also as a fraction of the grok
step. P(grok within Δ | alarm): of the runs that alarmed, the fraction that grokked within Δ
steps after the alarm. The run-level score for the AUROC is the detector's causal score just
before the grok step for a positive and at the end of the run for a negative (negatives are
observed longer, which can only raise their score: the AUROC is conservative). Intervals:
Clopper–Pearson for rates, a seeded bootstrap for the AUROC.

Cross-validation (:func:`cross_validate`): leave one group (workload, family or block) out,
choose the detector's parameters on the other groups from its ``grid`` by Youden's J (hit
rate − false-alarm rate; ties: larger median lead fraction, then the parameters given — ``detect
--config``, when they are a grid point — then the grid's order, as docs/DETECTOR.md fixed it),
score the held-out group with them, and pool the held-out results. Every fold must be tuned on
a positive and a negative (:func:`cross_validation_problem`; otherwise it is an error, and
``detect`` reports the in-sample rows only and says why).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .detectors import DETECTORS, make_detector
from .evaluation import classify_run
from .events import CENSORED, GROKKED, classify_generalisation, decline_ratio
from .record import NOT_EVIDENCE, UNFINISHED, TrialRecord, column
from .stats import Proportion, lead_time_summary, proportion

__all__ = ["DetectionConfig", "LabelledRun", "label_runs", "RunAlarm", "DetectorResult", "evaluate",
           "cross_validate", "cross_validate_selection", "auroc"]

POSITIVE, NEGATIVE, EXCLUDED = "positive", "negative", "excluded"


@dataclass(frozen=True)
class DetectionConfig:
    """delta: the Δ of P(grok within Δ | alarm). hard_factor: a hard negative is observed for at
    least this × the longest positive's grok step. post_grok: a positive must be followed for
    this many steps after its grok (sweeps stop a run 1,000 steps after it groks). conf: interval coverage. boot, seed: the
    AUROC bootstrap. group: the cross-validation's grouping (workload | family | block)."""

    delta: int = 2000
    hard_factor: float = 3.0
    post_grok: int = 1000
    conf: float = 0.95
    boot: int = 2000
    seed: int = 0
    group: str = "workload"


@dataclass
class LabelledRun:
    record: TrialRecord
    outcome: str           # grokked | immediate | censored | diverged
    label: str             # positive | negative | excluded
    grok_step: int | None
    last_step: int | None
    hard: bool = False
    _rows: list | None = field(default=None, repr=False)

    @property
    def trial_id(self) -> str:
        return self.record.trial_id

    @property
    def rows(self) -> list[tuple[int, int, dict]]:
        """(step, 0 feature | 1 eval, row) in the trainer's order — built once per run, since a
        parameter search replays the same rows under hundreds of configurations."""
        if self._rows is None:
            rec = self.record
            rows = [(int(r["step"]), 0, r) for r in rec.features.iter_rows(named=True)]
            rows += [(int(r["step"]), 1, r) for r in rec.evals.iter_rows(named=True)]
            self._rows = sorted(rows, key=lambda t: (t[0], t[1]))
        return self._rows

    def group(self, key: str) -> str:
        if key == "block":
            return self.record.settings.block or "—"
        if key == "family":
            return self.record.family
        return self.record.trial.get("workload") or "—"


def label_runs(records: Sequence[TrialRecord], cfg: DetectionConfig = DetectionConfig()) -> list[LabelledRun]:
    """Every run labelled positive / negative / excluded (see the module docstring)."""
    out = []
    for rec in records:
        e = rec.evals
        status = rec.trial.get("status")
        g = classify_generalisation(e["step"].to_numpy(), column(e, "memo_acc"), column(e, "grok_acc"),
                                    rec.settings.grok_threshold, diverged=status == "diverged")
        # A finished trial whose rows stop short of its trials row (data lost) is no evidence.
        usable = status not in (*NOT_EVIDENCE, *UNFINISHED) and rec.incompleteness() is None
        if g.outcome == GROKKED and (rec.steps or 0) < g.grok_step + cfg.post_grok:
            usable = False  # grokked at the end of its budget: too late to be followed
        label = (POSITIVE if g.outcome == GROKKED else NEGATIVE if g.outcome == CENSORED else EXCLUDED) \
            if usable else EXCLUDED
        out.append(LabelledRun(rec, g.outcome, label, g.grok_step if label == POSITIVE else None, rec.steps))
    longest = max((r.grok_step for r in out if r.label == POSITIVE), default=None)
    for r in out:
        wd = r.record.trial.get("weight_decay") or 0.0
        r.hard = (r.label == NEGATIVE and wd > 0 and longest is not None and r.last_step is not None
                  and r.last_step >= cfg.hard_factor * longest)
    return out


@dataclass(frozen=True)
class RunAlarm:
    """One run under one detector: its alarm step, the score used for the AUROC, the outcome."""

    trial_id: str
    label: str
    hard: bool
    grok_step: int | None
    alarm_step: int | None
    score: float
    outcome: str           # hit | late | miss | false_alarm | quiet | excluded


def run_alarm(run: LabelledRun, name: str, params: dict | None = None, full_only: bool = True) -> RunAlarm:
    """Replay the detector over the run (trainer's order); the score is read just before the
    first row at or after the grok step for a positive, at the end otherwise."""
    rec = run.record
    det = make_detector(name, params, window=rec.full_window if full_only else None,
                        context={"weight_decay": rec.trial.get("weight_decay")})
    score, gs = None, run.grok_step
    for step, kind, row in run.rows:
        if gs is not None and score is None and step >= gs:
            score = det.score
        det.update(feature=row) if kind == 0 else det.update(eval=row)
    score = det.score if score is None else score
    a = det.alarm_step
    if run.label == EXCLUDED:
        outcome = "excluded"
    elif run.label == NEGATIVE:
        outcome = "false_alarm" if a is not None else "quiet"
    else:
        outcome = classify_run(a, gs).outcome  # hit / late / miss: one definition for every table
    return RunAlarm(run.trial_id, run.label, run.hard, gs, a, float(score), outcome)


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a random positive > that of a random negative) + ½ P(tie); NaN without both.
    −inf (a detector that saw nothing) ranks lowest; a NaN score (no score) ties with it."""
    p = np.asarray(pos, dtype=float)
    n = np.asarray(neg, dtype=float)
    if not p.size or not n.size:
        return math.nan
    # np.nan_to_num would also turn a real −inf into −1.8e308, above the NaNs it maps to −inf.
    p, n = np.where(np.isnan(p), -np.inf, p), np.where(np.isnan(n), -np.inf, n)
    gt = (p[:, None] > n[None, :]).sum()
    eq = (p[:, None] == n[None, :]).sum()
    return float((gt + 0.5 * eq) / (p.size * n.size))


@dataclass
class DetectorResult:
    """A detector scored over a set of runs (every field but ``alarms`` is a plain number,
    string or list, so the result goes to a table or JSON as is)."""

    detector: str
    params: dict
    evaluation: str                 # in-sample | cv:<group>
    n_positive: int
    n_negative: int
    n_hard: int
    n_excluded: int
    hits: Proportion
    late: int
    misses: int
    false_alarms: Proportion
    hard_false_alarms: Proportion
    lead_median: float
    lead_q1: float
    lead_q3: float
    lead_fraction_median: float
    p_grok_within_delta: Proportion
    auroc: float
    auroc_lo: float
    auroc_hi: float
    delta: int
    folds: list = field(default_factory=list)     # cv: [group, chosen params] per fold ([group, detector, params] for a selection)
    alarms: list = field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        """One ``detection`` table row."""
        d = {k: v for k, v in asdict(self).items() if k not in ("alarms", "folds", "params")}
        for k in ("hits", "false_alarms", "hard_false_alarms", "p_grok_within_delta"):
            p = d.pop(k)
            d.update({f"{k}_k": p["k"], f"{k}_n": p["n"], f"{k}_rate": p["rate"], f"{k}_lo": p["lo"],
                      f"{k}_hi": p["hi"]})
        d["params"] = json.dumps(self.params, sort_keys=True)
        d["folds"] = json.dumps(self.folds, sort_keys=True)
        return d


def score_alarms(alarms: Sequence[RunAlarm], detector: str, params: dict, evaluation: str,
                 cfg: DetectionConfig = DetectionConfig()) -> DetectorResult:
    pos = [a for a in alarms if a.label == POSITIVE]
    neg = [a for a in alarms if a.label == NEGATIVE]
    hard = [a for a in neg if a.hard]
    hits = [a for a in pos if a.outcome == "hit"]
    leads = [a.grok_step - a.alarm_step for a in hits]
    fracs = [(a.grok_step - a.alarm_step) / a.grok_step for a in hits if a.grok_step > 0]
    lead = lead_time_summary(leads)
    alarmed = [a for a in pos + neg if a.alarm_step is not None]
    soon = sum(1 for a in alarmed if a.grok_step is not None and 0 < a.grok_step - a.alarm_step <= cfg.delta)
    auc = auroc([a.score for a in pos], [a.score for a in neg])
    lo = hi = math.nan
    if pos and neg and cfg.boot:
        rng = np.random.default_rng(cfg.seed)
        ps, ns = np.array([a.score for a in pos]), np.array([a.score for a in neg])
        boots = [auroc(rng.choice(ps, ps.size), rng.choice(ns, ns.size)) for _ in range(cfg.boot)]
        lo, hi = (float(x) for x in np.percentile(boots, [100 * (1 - cfg.conf) / 2, 100 * (1 + cfg.conf) / 2]))
    return DetectorResult(
        detector, dict(params), evaluation, len(pos), len(neg), len(hard),
        sum(1 for a in alarms if a.label == EXCLUDED),
        proportion(len(hits), len(pos), cfg.conf), sum(a.outcome == "late" for a in pos),
        sum(a.outcome == "miss" for a in pos),
        proportion(sum(a.outcome == "false_alarm" for a in neg), len(neg), cfg.conf),
        proportion(sum(a.outcome == "false_alarm" for a in hard), len(hard), cfg.conf),
        lead.median, lead.q25, lead.q75, float(np.median(fracs)) if fracs else math.nan,
        proportion(soon, len(alarmed), cfg.conf), auc, lo, hi, cfg.delta, alarms=list(alarms))


def evaluate(runs: Sequence[LabelledRun], detector: str, params: dict | None = None,
             cfg: DetectionConfig = DetectionConfig(), full_only: bool = True) -> DetectorResult:
    """In-sample: the detector with fixed ``params`` over every run."""
    params = dict(params or {})
    return score_alarms([run_alarm(r, detector, params, full_only) for r in runs], detector, params,
                        "in-sample", cfg)


def _grid(detector: str, base: dict) -> list[dict]:
    if detector not in DETECTORS:  # a frozen preset: nothing to tune
        return [dict(base)]
    grid = DETECTORS[detector].grid
    keys = sorted(grid)
    return [dict(base, **dict(zip(keys, vals))) for vals in itertools.product(*(grid[k] for k in keys))] or [dict(base)]


def _objective(res: DetectorResult) -> tuple:
    j = (res.hits.rate if res.hits.n else 0.0) - (res.false_alarms.rate if res.false_alarms.n else 0.0)
    lead = res.lead_fraction_median if math.isfinite(res.lead_fraction_median) else -1.0
    return (round(j, 12), lead)


def cross_validate(runs: Sequence[LabelledRun], detector: str, base: dict | None = None,
                   cfg: DetectionConfig = DetectionConfig(), full_only: bool = True) -> DetectorResult:
    """Leave one ``cfg.group`` out: tune on the rest (grid, Youden's J), score the held-out
    group; the held-out alarms of every fold are pooled into one result. The detector's grid
    keys are chosen per fold (``folds``), so the result's ``params`` are only the keys of
    ``base`` that no fold tunes — a ``base`` value of a tuned key is not what was scored."""
    base = dict(base or {})
    tuned = set(DETECTORS[detector].grid) if detector in DETECTORS else set()
    fixed = {k: v for k, v in base.items() if k not in tuned}
    held, folds = _leave_one_group_out(runs, [(detector, p) for p in _grid(detector, base)], cfg, full_only,
                                       prefer=lambda candidate: candidate[1] == base)
    res = score_alarms(held, detector, fixed, f"cv:{cfg.group}", cfg)
    res.folds = [[g, p] for g, _, p in folds]
    return res


def cross_validate_selection(runs: Sequence[LabelledRun], detectors: Sequence[str],
                             cfg: DetectionConfig = DetectionConfig(), full_only: bool = True) -> DetectorResult:
    """Leave one ``cfg.group`` out over a whole selection rule: in each fold every configuration
    of every one of ``detectors``' grids is scored on the other groups, the best (Youden's J,
    then the median lead fraction, then the order given) is scored on the held-out group, and
    the held-out alarms are pooled — what choosing among the families is worth, not what one
    family is. The result is named after the detectors the folds chose (joined by ``|`` when
    they differ; the pooled AUROC is then NaN, as their scores are not on one scale); ``folds``
    lists [group, detector, params]."""
    candidates = [(d, p) for d in detectors for p in _grid(d, {})]
    held, folds = _leave_one_group_out(runs, candidates, cfg, full_only)
    chosen = [d for d in detectors if any(d == fold[1] for fold in folds)]
    res = score_alarms(held, "|".join(chosen), {}, f"cv:{cfg.group}", cfg)
    if len(chosen) > 1:  # scores of different detectors are on different scales: no pooled ranking
        res.auroc = res.auroc_lo = res.auroc_hi = math.nan
    res.folds = [list(fold) for fold in folds]
    return res


def cross_validation_problem(runs: Sequence[LabelledRun], group: str) -> str | None:
    """Why leaving one ``group`` out cannot be done honestly on ``runs`` (None: it can). Each
    fold that scores runs is tuned on the other groups' labelled runs, and Youden's J needs a
    positive and a negative there: without them every grid point ties at J = 0 and the "tuned"
    choice is the grid's first — a cross-validated row that was never tuned."""
    labelled = [r for r in runs if r.label != EXCLUDED]
    groups = sorted({r.group(group) for r in labelled})
    if len(groups) < 2:
        return (f"leave-one-{group}-out needs positive or negative runs of at least two {group} values; got "
                f"{len(groups)} ({', '.join(map(str, groups)) or 'none'})")
    for g in groups:
        rest = {r.label for r in labelled if r.group(group) != g}
        if not {POSITIVE, NEGATIVE} <= rest:
            lacking = "positive (a delayed grok)" if POSITIVE not in rest else "negative (a run that never grokked)"
            return (f"leave-one-{group}-out: the fold that holds out {g} would be tuned on the other {group} "
                    f"values, which have no {lacking}")
    return None


def _leave_one_group_out(runs: Sequence[LabelledRun], candidates: list[tuple[str, dict]], cfg: DetectionConfig,
                         full_only: bool, prefer=lambda candidate: False) -> tuple[list[RunAlarm], list[tuple]]:
    """The held-out alarms of every fold and each fold's (group, detector, params): the candidate
    with the best objective on the other groups (ties: ``prefer``, then the first given)."""
    def key(c):
        return c[0], json.dumps(c[1], sort_keys=True)

    problem = cross_validation_problem(runs, cfg.group)
    if problem is not None:
        raise ValueError(problem)
    groups = sorted({r.group(cfg.group) for r in runs})
    alarms = {key(c): [run_alarm(r, c[0], c[1], full_only) for r in runs] for c in candidates}
    fit = DetectionConfig(**{**asdict(cfg), "boot": 0})
    held, folds = [], []
    for g in groups:
        inside = [i for i, r in enumerate(runs) if r.group(cfg.group) != g]
        best = max(candidates, key=lambda c: (_objective(score_alarms(
            [alarms[key(c)][i] for i in inside], c[0], c[1], "fit", fit)), prefer(c)))
        held += [alarms[key(best)][i] for i, r in enumerate(runs) if r.group(cfg.group) == g]
        folds.append((g, best[0], best[1]))
    return held, folds


# --------------------------------------------------------------------------------------------
# The paper's statistic beside the detectors: what it does and does not separate
# --------------------------------------------------------------------------------------------


def _g23_at(rec: TrialRecord, step: int | None, full_only: bool, first_after: bool = False) -> float:
    w = rec.windows(full_only)
    if step is None or not w.height:
        return math.nan
    sel = w.filter(w["step"] >= step).head(1) if first_after else w.filter(w["step"] <= step).tail(1)
    return float(sel["g23"][0]) if sel.height and sel["g23"][0] is not None else math.nan


def criterion_over_spans(runs: Sequence[LabelledRun], ratio: float = 1.5, full_only: bool = True) -> list[dict]:
    """The paper's g23 criterion evaluated for *every* labelled run over a comparable span.

    Reference step T: the grok step of a positive; for a negative, its memorisation step plus
    the median (grok − memorisation) of the positives — "when it would have grokked". Per run:
    ``peak``: max g23 over windows ending before T, ``at_T``: g23 of the last window ≤ T,
    ``at_memo``: g23 of the first window at or after memorisation; ``peak_decline`` = peak/at_T
    (the paper's statistic) and ``memo_decline`` = at_memo/at_T (anchored at memorisation).
    """
    spans = [r.grok_step - r.record.memorization_step for r in runs
             if r.label == POSITIVE and r.record.memorization_step is not None]
    span = float(np.median(spans)) if spans else math.nan
    out = []
    for r in runs:
        if r.label == EXCLUDED:
            continue
        memo = r.record.memorization_step
        if r.label == POSITIVE:
            t = r.grok_step
        else:
            t = int(memo + span) if memo is not None and math.isfinite(span) else None
        w = r.record.windows(full_only)
        before = w.filter(w["step"] < t)["g23"].drop_nulls().drop_nans() if t is not None else w["g23"].clear()
        peak = float(before.max()) if before.len() else math.nan
        at_t = _g23_at(r.record, t, full_only)
        at_memo = _g23_at(r.record, memo, full_only, first_after=True)
        # decline_ratio as in the runs table: g23 at zero under a positive value is +inf, met
        peak_decline, memo_decline = decline_ratio(peak, at_t), decline_ratio(at_memo, at_t)
        out.append({"trial_id": r.trial_id, "label": r.label, "hard": r.hard,
                    "weight_decay": r.record.trial.get("weight_decay"), "reference_step": t,
                    "observed": t is not None and r.last_step is not None and r.last_step >= t,
                    "peak_decline": peak_decline, "memo_decline": memo_decline,
                    "peak_met": peak_decline > ratio, "memo_met": memo_decline > ratio})
    return out
