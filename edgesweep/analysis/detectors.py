"""Prospective, causal grokking detectors: one small class each, run online and offline alike.

The paper's criterion (``events.g23_precedence``) is retrospective: it knows the grok step and
looks back. A detector sees only the stream up to now. Its interface:

* ``update(feature, eval) -> int | None`` — feed one stored row at a time, in step order, a
  feature row (``features`` table columns) *or* an eval row (``evals`` columns); at equal steps
  the feature row comes first, as in the trainer (its snapshot callback runs before its eval
  callback). Returns the alarm step exactly once, when the alarm fires; None otherwise.
  Rows at a step not after the last one seen of the same kind are ignored (a trainer that
  replays steps after a restore cannot double-count them).
* ``score`` — a continuous, causal score (larger = more alarming) of the stream so far.
* ``state_dict()`` / ``load_state_dict()`` — plain JSON-able state, so the detector rides in a
  training checkpoint; it includes the config, and a restore under another config is refused.

The trainer feeds rows as they are produced (``platform/trainable.py``); :func:`replay` feeds
stored rows in the same order, so online and offline alarms are identical (tested).

Filling windows. A window with fewer than W rows is a different object (fewer singular values,
its g23 compares other modes), so detectors built with ``window=W`` skip rows whose ``window``
column is below W — the default of the analysis (``AnalysisConfig.full_windows_only``); pass
``window=None`` to use every row. Rows flagged ``nonfinite`` are always skipped.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Iterable

import numpy as np

from .events import decline_ratio

__all__ = ["DetectorConfig", "Detector", "G23CollapseDetector", "PaperG23Detector",
           "TestAccuracyDetector", "TestLossDetector", "WeightDecayDetector", "SpectralTrendDetector",
           "TREND_FEATURES", "DETECTORS", "BASELINES",
           "make_detector", "replay", "detector_names"]


def _as_float(x: Any) -> float:
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def _whole(v: Any, lo: int) -> bool:
    """Whether ``v`` is a whole number ≥ ``lo`` (2 and 2.0 are; True, 2.5, NaN and ∞ are not)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and int(v) == v and v >= lo)


class Detector:
    """Base class: step bookkeeping, latching, state; subclasses implement ``_feature`` and/or
    ``_eval`` (return True to alarm at this row) and keep their own state in ``_state``."""

    name = "base"
    Config: type = type(None)
    _STATE_VERSION = 1

    #: Parameter values searched when the detector is tuned (the leave-one-group-out
    #: cross-validation of ``detection.py``); empty: nothing to tune.
    grid: dict[str, list] = {}

    def __init__(self, config=None, window: int | None = None, context: dict | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self.window = window
        self.context = dict(context or {})  # what a detector may know from the start: the trial's settings
        self.reset()

    def reset(self) -> None:
        self._last = {"feature": None, "eval": None}
        self.alarm_step: int | None = None
        self.score = -math.inf
        self._state: dict[str, Any] = self._initial_state()

    def _initial_state(self) -> dict[str, Any]:
        return {}

    @property
    def fired(self) -> bool:
        return self.alarm_step is not None

    def update(self, feature: dict | None = None, eval: dict | None = None) -> int | None:
        kind, row = ("feature", feature) if feature is not None else ("eval", eval)
        if row is None:
            return None
        step = int(row["step"])
        if self._last[kind] is not None and step <= self._last[kind]:
            return None
        self._last[kind] = step
        if kind == "feature":
            if row.get("nonfinite") or (self.window is not None and (row.get("window") or 0) < self.window):
                return None
            fire = self._feature(row)
        else:
            fire = self._eval(row)
        if fire and self.alarm_step is None:  # latched: fires once; the score keeps moving
            self.alarm_step = step
            return step
        return None

    def _feature(self, row: dict) -> bool:
        return False

    def _eval(self, row: dict) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"version": self._STATE_VERSION, "name": self.name, "config": asdict(self.config),
                "window": self.window, "last": dict(self._last), "alarm_step": self.alarm_step,
                "score": self.score, "state": self._dump_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != self._STATE_VERSION or state.get("name") != self.name:
            raise ValueError(f"detector state of {state.get('name')!r} v{state.get('version')} "
                             f"cannot be loaded into {self.name!r} v{self._STATE_VERSION}")
        if state["config"] != asdict(self.config) or state["window"] != self.window:
            raise ValueError(f"detector state was saved with config {state['config']} (window "
                             f"{state['window']}), this detector has {asdict(self.config)} "
                             f"(window {self.window})")
        self._last = dict(state["last"])
        self.alarm_step = state["alarm_step"]
        self.score = float(state["score"])
        self._state = self._load_state(state["state"])

    def _dump_state(self) -> dict[str, Any]:
        return dict(self._state)

    def _load_state(self, s: dict[str, Any]) -> dict[str, Any]:
        return dict(s)


def _rel_std(values: Iterable[float]) -> float:
    """std/|mean| (population std); inf where the mean is 0 and the std is not."""
    r = np.fromiter(values, dtype=float)
    mean, sd = float(r.mean()), float(r.std())
    if mean == 0.0:
        return 0.0 if sd == 0.0 else math.inf
    return sd / abs(mean)


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of the g23-collapse rule (see :class:`G23CollapseDetector`)."""

    decline_factor: float = 1.5
    persistence: int = 3
    warmup_windows: int = 5
    stability_windows: int = 5
    max_rel_std: float = 0.25

    def __post_init__(self) -> None:
        if not (self.decline_factor > 1.0 and math.isfinite(self.decline_factor)):
            raise ValueError(f"decline_factor must be a finite number > 1, got {self.decline_factor}")
        for name, lo in (("persistence", 1), ("stability_windows", 1), ("warmup_windows", 0)):
            v = getattr(self, name)
            if not _whole(v, lo):
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not self.max_rel_std >= 0.0:  # also rejects NaN; inf disables the condition
            raise ValueError(f"max_rel_std must be >= 0, got {self.max_rel_std}")


class G23CollapseDetector(Detector):
    """"g23 collapse within a stable edge" — the rule fixed before the first sweep ran.

    At every (full, finite) window in step order:

    1. *Warm-up.* No alarm during the first ``warmup_windows`` windows with a finite g23; the
       running peak still sees them, like the paper's pre-grok maximum.
    2. *Decline.* g23_t ≤ peak_t / ``decline_factor`` (peak_t = max finite g23 so far, > 0).
    3. *Stable edge.* The last ``stability_windows`` gap ratios R are finite with relative
       std ≤ ``max_rel_std`` (a k* jump moves R by factors; ``inf`` turns this off).
    4. *Persistence.* 2 and 3 hold on ``persistence`` consecutive windows; the alarm fires at
       the last of them. A NaN g23 breaks the streak.

    Defaults: the paper's 1.5; 3 windows of persistence (one- or two-window dips of a noisy
    statistic are not a collapse); 5 warm-up windows; a loose R veto. On the laptop
    reproduction this rule alarmed on 27/30 runs, both arms, right after memorisation — it is
    kept as a baseline, by name. score = the largest peak/g23 decline seen so far.
    """

    name = "g23_collapse"
    Config = DetectorConfig
    grid = {"decline_factor": [1.5, 3.0, 10.0], "persistence": [1, 3], "max_rel_std": [0.25, math.inf]}

    def _initial_state(self):
        return {"n_valid": 0, "peak": -math.inf, "streak": 0,
                "ratios": deque(maxlen=self.config.stability_windows)}

    def _dump_state(self):
        return dict(self._state, ratios=list(self._state["ratios"]))

    def _load_state(self, s):
        return dict(s, ratios=deque((float(r) for r in s["ratios"]), maxlen=self.config.stability_windows))

    def _feature(self, row: dict) -> bool:
        cfg, st = self.config, self._state
        g = _as_float(row.get("g23"))
        st["ratios"].append(_as_float(row.get("gap_ratio")))
        valid = math.isfinite(g)
        if valid:
            st["n_valid"] += 1
            st["peak"] = max(st["peak"], g)
            self.score = _larger_decline(self.score, st["peak"], g)
        declined = (valid and st["n_valid"] > cfg.warmup_windows and st["peak"] > 0.0
                    and g <= st["peak"] / cfg.decline_factor)
        ratios = st["ratios"]
        stable = (declined and len(ratios) == cfg.stability_windows
                  and all(math.isfinite(r) for r in ratios) and _rel_std(ratios) <= cfg.max_rel_std)
        st["streak"] = st["streak"] + 1 if stable else 0
        return st["streak"] >= cfg.persistence


# --------------------------------------------------------------------------------------------
# A family of spectral rules searched on the development corpus (docs/DETECTOR.md)
# --------------------------------------------------------------------------------------------

#: Feature columns a spectral trend may follow, and how to read one out of a row.
TREND_FEATURES = {
    "g23": lambda r: _as_float(r.get("g23")),
    "gap_ratio": lambda r: _as_float(r.get("gap_ratio")),
    "update_norm": lambda r: _as_float(r.get("update_norm")),
    "subspace_rotation": lambda r: _as_float(r.get("subspace_rotation")),
    "delta_gram_fro": lambda r: _as_float(r.get("delta_gram_fro")),
    "sigma1": lambda r: _as_float((r.get("sigma") or [math.nan])[0]),
    "sigma12": lambda r: (_as_float(r["sigma"][0]) / _as_float(r["sigma"][1])
                          if r.get("sigma") and len(r["sigma"]) > 1 and r["sigma"][1] else math.nan),
    "sigma23": lambda r: (_as_float(r["sigma"][1]) / _as_float(r["sigma"][2])
                          if r.get("sigma") and len(r["sigma"]) > 2 and r["sigma"][2] else math.nan),
}


@dataclass(frozen=True)
class SpectralTrendConfig:
    feature: str = "g23"
    direction: str = "rise"      # rise: above reference × factor; fall: below reference / factor
    reference: str = "extreme"   # extreme: the running min (rise) / max (fall) since the fit;
                                 # fit: the first full window after the fit step (at equal
                                 # steps the feature row comes before the eval that marks the fit)
    factor: float = 2.0
    smooth: int = 3              # median of the last ``smooth`` windows (robust to single spikes)
    persistence: int = 2
    fit_acc: float = 0.9         # the fit step: train accuracy first ≥ this (evals, not test data)

    def __post_init__(self) -> None:
        if self.feature not in TREND_FEATURES:
            raise ValueError(f"feature must be one of {sorted(TREND_FEATURES)}, got {self.feature!r}")
        if self.direction not in ("rise", "fall") or self.reference not in ("extreme", "fit"):
            raise ValueError("direction: rise | fall; reference: extreme | fit")
        if not (self.factor > 1 and math.isfinite(self.factor)):
            raise ValueError(f"factor must be a finite number > 1, got {self.factor}")
        for name in ("smooth", "persistence"):
            if not _whole(getattr(self, name), 1):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")


class SpectralTrendDetector(Detector):
    """After the training set is fitted (train accuracy, not test data), follow one spectral
    feature (median of the last ``smooth`` windows) against a reference — its running extreme
    since the fit, or its value at the first window after the fit — and alarm when it has moved
    by ``factor`` in ``direction`` for ``persistence`` windows. score = the largest such move
    so far."""

    name = "spectral_trend"
    Config = SpectralTrendConfig
    grid = {"feature": sorted(TREND_FEATURES), "direction": ["rise", "fall"], "reference": ["extreme", "fit"],
            "factor": [1.5, 3.0, 10.0], "persistence": [1, 3]}

    def _initial_state(self):
        return {"fitted": False, "recent": deque(maxlen=self.config.smooth), "ref": None, "streak": 0}

    def _dump_state(self):
        return dict(self._state, recent=list(self._state["recent"]))

    def _load_state(self, s):
        return dict(s, recent=deque((float(v) for v in s["recent"]), maxlen=self.config.smooth))

    def _eval(self, row: dict) -> bool:
        if _as_float(row.get("memo_acc")) >= self.config.fit_acc:
            self._state["fitted"] = True
        return False

    def _feature(self, row: dict) -> bool:
        cfg, st = self.config, self._state
        if not st["fitted"]:
            return False
        v = TREND_FEATURES[cfg.feature](row)
        if not (math.isfinite(v) and v > 0):
            st["streak"] = 0
            return False
        st["recent"].append(v)
        m = float(np.median(np.fromiter(st["recent"], dtype=float)))
        if st["ref"] is None:
            st["ref"] = m
        elif cfg.reference == "extreme":
            st["ref"] = min(st["ref"], m) if cfg.direction == "rise" else max(st["ref"], m)
        move = m / st["ref"] if cfg.direction == "rise" else st["ref"] / m
        self.score = max(self.score, move)
        st["streak"] = st["streak"] + 1 if move >= cfg.factor else 0
        return st["streak"] >= cfg.persistence


# --------------------------------------------------------------------------------------------
# Baselines: what any spectral detector has to beat (printed beside it, always)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperG23Config:
    decline_factor: float = 1.5


class PaperG23Detector(Detector):
    """The paper's criterion made causal: alarm at the first window whose g23 has fallen below
    its running peak / ``decline_factor`` (the paper's 1.5). score = the largest peak/g23."""

    name = "paper_g23"
    Config = PaperG23Config
    grid = {"decline_factor": [1.5, 3.0, 10.0, 30.0]}

    def _initial_state(self):
        return {"peak": -math.inf}

    def _feature(self, row: dict) -> bool:
        g = _as_float(row.get("g23"))
        if not math.isfinite(g):
            return False
        st = self._state
        st["peak"] = max(st["peak"], g)
        self.score = _larger_decline(self.score, st["peak"], g)
        return st["peak"] > 0 and g <= st["peak"] / self.config.decline_factor


def _larger_decline(score: float, peak: float, g23: float) -> float:
    """The score after one more window: the larger of ``score`` and peak/g23, as the paper's
    statistic reads it (:func:`.events.decline_ratio`): a g23 at zero below a positive peak is a
    complete collapse, +inf — the strongest decline, not a window to skip."""
    d = decline_ratio(peak, g23)
    return max(score, d) if not math.isnan(d) else score


def _require(name: str, value, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _fraction(name: str, value, *, open_low: bool = True, open_high: bool = False) -> None:
    """``value`` in the interval between 0 and 1 (ends open or closed as given); NaN fails."""
    low = value > 0 if open_low else value >= 0
    high = value < 1 if open_high else value <= 1
    _require(name, value, bool(low and high), f"a number in {'(' if open_low else '['}0, 1{')' if open_high else ']'}")


@dataclass(frozen=True)
class TestAccuracyConfig:
    level: float = 0.3

    def __post_init__(self) -> None:
        _fraction("level", self.level)  # an accuracy: above 1 no run ever alarms


class TestAccuracyDetector(Detector):
    """Test-accuracy trend: alarm when the grok criterion's accuracy first reaches ``level``
    (0.3: on the laptop reproduction 12/12 hits, 3/18 false alarms). score = its running max."""

    name = "test_accuracy"
    Config = TestAccuracyConfig
    grid = {"level": [0.1, 0.2, 0.3, 0.5, 0.7]}

    def _eval(self, row: dict) -> bool:
        acc = _as_float(row.get("grok_acc"))
        if not math.isfinite(acc):
            return False
        self.score = max(self.score, acc)
        return acc >= self.config.level


@dataclass(frozen=True)
class TestLossConfig:
    decline: float = 0.1     # fractional fall of the test loss below its peak since the fit
    persistence: int = 3     # consecutive evaluations
    fit_acc: float = 0.9     # the fit step: train accuracy first ≥ this

    def __post_init__(self) -> None:
        _fraction("decline", self.decline, open_high=True)
        _require("persistence", self.persistence, _whole(self.persistence, 1), "an integer >= 1")
        _fraction("fit_acc", self.fit_acc)


class TestLossDetector(Detector):
    """Test-loss trend: once the training set is fitted, test loss typically rises (overfitting)
    and falls when generalisation starts. Alarm when it has stayed ≥ ``decline`` below its peak
    since the fit for ``persistence`` evaluations. score = the largest 1 − loss/peak."""

    name = "test_loss"
    Config = TestLossConfig
    grid = {"decline": [0.05, 0.1, 0.2, 0.4], "persistence": [1, 3]}

    def _initial_state(self):
        return {"fitted": False, "peak": -math.inf, "streak": 0}

    def _eval(self, row: dict) -> bool:
        st, cfg = self._state, self.config
        st["fitted"] = st["fitted"] or _as_float(row.get("memo_acc")) >= cfg.fit_acc
        loss = _as_float(row.get("test_loss"))
        if not (st["fitted"] and math.isfinite(loss)):
            return False
        st["peak"] = max(st["peak"], loss)
        drop = 1.0 - loss / st["peak"] if st["peak"] > 0 else 0.0
        self.score = max(self.score, drop)
        st["streak"] = st["streak"] + 1 if drop >= cfg.decline else 0
        return st["streak"] >= cfg.persistence


@dataclass(frozen=True)
class WeightDecayConfig:
    above: float = 0.0

    def __post_init__(self) -> None:
        _require("above", self.above, self.above >= 0 and math.isfinite(self.above), "a finite number >= 0")


class WeightDecayDetector(Detector):
    """Weight-decay indicator: alarm at the run's first row iff its weight decay exceeds
    ``above``. score = the weight decay. Knows the label's strongest correlate and nothing else:
    a detector that does not beat it on hard negatives has learnt only "weight decay is on"."""

    name = "weight_decay"
    Config = WeightDecayConfig
    grid = {"above": [0.0, 0.05, 0.2]}

    def _any(self) -> bool:
        wd = _as_float(self.context.get("weight_decay"))
        self.score = wd
        return wd > self.config.above

    def _feature(self, row: dict) -> bool:
        return self._any()

    def _eval(self, row: dict) -> bool:
        return self._any()


#: Detectors by name (the CLI's ``--detector``, the analysis config's ``detector``).
DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (
    G23CollapseDetector, SpectralTrendDetector, PaperG23Detector, TestAccuracyDetector, TestLossDetector,
    WeightDecayDetector)}
#: The baselines printed beside every detector (DESIGN.md 1.3).
BASELINES = ("paper_g23", "g23_collapse", "test_accuracy", "test_loss", "weight_decay")
#: Frozen detectors: a name for a class with fixed parameters, registered once the parameters
#: were chosen on the development corpus and committed in ``detectors/<name>.json`` before the
#: evaluation sweep ran (docs/DETECTOR.md; tests check code and file agree). Parameters given to
#: a preset override nothing: a frozen detector is what it was frozen as.
PRESETS: dict[str, tuple[str, dict]] = {
    # Frozen 2026-12-02 on the 106-run corpus (docs/results/grokking-corpus, code c0f915d): the
    # largest in-sample J of the 204 pre-stated configurations — and a weak one (J 0.15, AUROC
    # 0.48 in-sample; docs/DETECTOR.md section 2). Not the default until its evaluation ran.
    "edge_warning": ("spectral_trend", {"direction": "rise", "factor": 10.0, "feature": "delta_gram_fro",
                                        "persistence": 1, "reference": "fit"}),
}
DEFAULT_DETECTOR = G23CollapseDetector.name


def detector_names() -> list[str]:
    return sorted(DETECTORS) + sorted(PRESETS)


def make_detector(name: str = DEFAULT_DETECTOR, params: dict | None = None,
                  window: int | None = None, context: dict | None = None) -> Detector:
    """A detector by name with its config from ``params`` (unknown keys are an error); a
    preset name gives its frozen class and parameters."""
    if name in PRESETS:
        if params:
            raise ValueError(f"detector {name!r} is frozen (detectors/{name}.json); it takes no parameters")
        cls_name, frozen = PRESETS[name]
        det = make_detector(cls_name, frozen, window, context)
        det.name = name  # its state says which frozen rule it is
        return det
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; allowed: {', '.join(detector_names())}")
    cls = DETECTORS[name]
    allowed = {f.name for f in fields(cls.Config)} if cls.Config is not type(None) else set()
    unknown = sorted(set(params or {}) - allowed)
    if unknown:
        raise ValueError(f"detector {name!r}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    if params:
        _check_param_types(name, cls.Config, params)
    try:
        config = cls.Config(**(params or {})) if cls.Config is not type(None) else None
    except ValueError as exc:  # a value out of its range: say whose parameter it is
        raise ValueError(f"detector {name!r}: {exc}") from None
    return cls(config, window=window, context=context)


def _check_param_types(name: str, config_cls, params: dict) -> None:
    """A parameter must have the kind of its default — a number for a number, a string for a
    string — or the first comparison deep inside a replay fails with a bare TypeError."""
    def kind(v):
        if isinstance(v, (bool, np.bool_)):
            return "a boolean"
        if isinstance(v, numbers.Real):  # numpy's too
            return "a number"
        if isinstance(v, str):
            return "a string"
        return None

    for f in fields(config_cls):
        if f.name in params and f.default is not MISSING and kind(f.default) is not None:
            if kind(params[f.name]) != kind(f.default):
                raise ValueError(f"detector {name!r}: parameter {f.name} must be {kind(f.default)} "
                                 f"(default {f.default!r}), got {params[f.name]!r}")


def replay(detector: Detector, features: Iterable[dict], evals: Iterable[dict]) -> int | None:
    """Feed stored rows to ``detector`` in the trainer's order (by step; at equal steps the
    feature row first) and return its alarm step. The detector keeps its final state."""
    rows = [(int(r["step"]), 0, r) for r in features] + [(int(r["step"]), 1, r) for r in evals]
    rows.sort(key=lambda t: (t[0], t[1]))
    for _, kind, row in rows:
        if kind == 0:
            detector.update(feature=row)
        else:
            detector.update(eval=row)
    return detector.alarm_step
