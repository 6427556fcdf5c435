"""Sweep specs: YAML → validated, fully resolved trial configs (DESIGN.md §3.3).

Every error is a :class:`SpecError` whose message names the file, the key path and what is
allowed; unknown keys are errors, because a typo must never fall back to a default silently.
Validation happens before any Ray cluster starts.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..workloads import PRESETS, WORKLOADS  # platform → workloads: the names live there
from ..workloads.optim import OPTIMIZERS
GRID_AXES = ("workload", "optimizer", "weight_decay", "seed")


class SpecError(ValueError):
    """A sweep spec that cannot run. The message is meant to be shown as is."""


# Each section: key -> (check, default). A check returns an error string or None.
def _int(lo=None, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        if lo is not None and v < lo:
            return f"must be ≥ {lo}, got {v}"
        if hi is not None and v > hi:
            return f"must be ≤ {hi}, got {v}"
        return None
    return check


def _num(lo=None, positive=False, allow_none=False):
    def check(v):
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if positive and v <= 0:
            return f"must be > 0, got {v}"
        if lo is not None and v < lo:
            return f"must be ≥ {lo}, got {v}"
        return None
    return check


def _choice(options, allow_none=False):
    def check(v):
        if v is None and allow_none:
            return None
        return None if v in options else f"must be one of {', '.join(map(str, options))}; got {v!r}"
    return check


def _opt_int(lo):
    base = _int(lo)
    return lambda v: None if v is None else base(v)


def _betas(v):
    if v is None:
        return None
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v)):
        return f"must be a pair [beta1, beta2] with 0 ≤ beta < 1, got {v!r}"
    return None


def _mapping(v):
    return None if isinstance(v, dict) else f"must be a mapping, got {type(v).__name__}"


def _regex_or_keyword(v):
    if not isinstance(v, str):
        return f"must be 'attention', 'all' or a regex string, got {v!r}"
    try:
        re.compile(v)
    except re.error as exc:
        return f"is not a valid regex ({exc})"
    return None


SECTIONS: dict[str, dict[str, tuple]] = {
    "train": {
        "preset": (_choice(PRESETS), "laptop"),
        "max_steps": (_int(1), 5000),
        "eval_every": (_int(1), 100),
        "checkpoint_every": (_int(1), 500),
        "batch_size": (_opt_int(1), None),
        "data_seed": (_int(0), 0),
        "device": (_choice(("auto", "cpu", "cuda")), "auto"),
        "amp": (_choice((True, False)), False),
        "model": (_mapping, {}),
        "task": (_mapping, {}),
    },
    "optimizer": {
        "lr": (_num(positive=True, allow_none=True), None),
        "betas": (_betas, None),
        "momentum": (_num(lo=0), 0.9),
        "decay": (_choice(("all", "matrices")), "all"),
        "grad_clip": (_num(positive=True, allow_none=True), 1.0),
        "schedule": (_choice(("constant", "warmup_cosine")), "constant"),
        "warmup_steps": (_int(0), 0),
    },
    "monitor": {
        "window": (_int(2), 10),
        "every": (_int(1), 100),
        "params": (_regex_or_keyword, "attention"),
        "sketch_dim": (_opt_int(1), None),
        "sketch_seed": (_int(0), 0),
        "accumulate": (_choice(("float64", "block")), "float64"),
    },
    "stop": {
        # Stop a trial this many steps after its grok step (None: run to max_steps).
        "after_grok": (_opt_int(0), None),
        "grok_threshold": (_num(lo=0), 0.95),
        "memo_threshold": (_num(lo=0), 0.99),
    },
}

TOP_LEVEL = {"name", "storage", "trial_resources", "max_failures", "grid", "per_workload",
             "description", *SECTIONS}


@dataclass(frozen=True)
class TrialSpec:
    """One grid point, fully resolved. ``trial_id`` is stable across restarts and resumes."""

    trial_id: str
    workload: str
    optimizer: str
    weight_decay: float
    seed: int
    train: dict
    optim: dict
    monitor: dict
    stop: dict

    @property
    def partition(self) -> dict:
        """The storage partition of this trial's rows."""
        return {"workload": self.workload, "optimizer": self.optimizer,
                "weight_decay": self.weight_decay}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialSpec":
        """Inverse of :meth:`as_dict` (what travels in Tune's config)."""
        return cls(**{k if k != "optimizer_settings" else "optim": v for k, v in d.items()})

    def as_dict(self) -> dict:
        return {"trial_id": self.trial_id, "workload": self.workload, "optimizer": self.optimizer,
                "weight_decay": self.weight_decay, "seed": self.seed, "train": self.train,
                "optimizer_settings": self.optim, "monitor": self.monitor, "stop": self.stop}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    storage: str
    trial_resources: dict
    max_failures: int
    trials: tuple[TrialSpec, ...]
    source: str = "<memory>"
    raw: dict = field(default_factory=dict, compare=False)


def trial_id_for(workload: str, optimizer: str, weight_decay: float, seed: int) -> str:
    return f"{workload}-{optimizer}-wd{float(weight_decay)!r}-s{seed}"


def _fail(src: str, path: str, msg: str):
    raise SpecError(f"{src}: {path}: {msg}")


def _check_section(src: str, prefix: str, name: str, values: Any) -> dict:
    if not isinstance(values, dict):
        _fail(src, prefix + name, f"must be a mapping, got {type(values).__name__}")
    allowed = SECTIONS[name]
    for key, val in values.items():
        if key not in allowed:
            _fail(src, f"{prefix}{name}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
        err = allowed[key][0](val)
        if err:
            _fail(src, f"{prefix}{name}.{key}", err)
    return dict(values)


def _grid_values(src: str, grid: dict) -> dict[str, list]:
    if not isinstance(grid, dict):
        _fail(src, "grid", "must be a mapping of axis -> list of values")
    for key in grid:
        if key not in GRID_AXES:
            _fail(src, f"grid.{key}", f"unknown axis; allowed: {', '.join(GRID_AXES)}")
    if "workload" not in grid:
        _fail(src, "grid.workload", "is required (a list of workloads)")
    out = {}
    defaults = {"optimizer": ["adamw"], "weight_decay": [1.0], "seed": [42]}
    for axis in GRID_AXES:
        vals = grid.get(axis, defaults.get(axis))
        if not isinstance(vals, list):
            vals = [vals]
        if not vals:
            _fail(src, f"grid.{axis}", "must not be empty")
        if len(set(map(repr, vals))) != len(vals):
            _fail(src, f"grid.{axis}", f"has duplicate values: {vals}")
        for i, v in enumerate(vals):
            where = f"grid.{axis}[{i}]"
            if axis == "workload" and v not in WORKLOADS:
                _fail(src, where, f"unknown workload {v!r}; allowed: {', '.join(WORKLOADS)}")
            if axis == "optimizer" and v not in OPTIMIZERS:
                _fail(src, where, f"unknown optimizer {v!r}; allowed: {', '.join(OPTIMIZERS)}")
            if axis == "weight_decay":
                err = _num(lo=0)(v)
                if err:
                    _fail(src, where, f"weight decay {err}")
            if axis == "seed":
                err = _int(0)(v)
                if err:
                    _fail(src, where, f"seed {err}")
        out[axis] = [float(v) if axis == "weight_decay" else v for v in vals]
    return out


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, val in override.items():
        merged[key] = val
    return merged


def parse_spec(raw: Any, source: str = "<memory>") -> SweepSpec:
    """Validate a parsed YAML document and expand its grid into trials."""
    src = source
    if not isinstance(raw, dict):
        raise SpecError(f"{src}: the sweep spec must be a YAML mapping at the top level")
    for key in raw:
        if key not in TOP_LEVEL:
            _fail(src, str(key), f"unknown key; allowed: {', '.join(sorted(TOP_LEVEL))}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        _fail(src, "name", f"is required: letters, digits, '_', '.', '-' (used as a folder name); got {name!r}")
    storage = raw.get("storage", "./results")
    if not isinstance(storage, str) or not storage:
        _fail(src, "storage", f"must be a local path or s3://bucket/prefix, got {storage!r}")
    res = raw.get("trial_resources", {"cpu": 1, "gpu": 0})
    if not isinstance(res, dict):
        _fail(src, "trial_resources", "must be a mapping like {cpu: 1, gpu: 0}")
    for key, val in res.items():
        if key not in ("cpu", "gpu"):
            _fail(src, f"trial_resources.{key}", "unknown key; allowed: cpu, gpu")
        err = _num(lo=0)(val)
        if err:
            _fail(src, f"trial_resources.{key}", err)
    resources = {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0))}
    if resources["cpu"] <= 0 and resources["gpu"] <= 0:
        _fail(src, "trial_resources", "a trial needs some cpu or gpu")
    max_failures = raw.get("max_failures", 3)
    err = _int(-1)(max_failures)
    if err:
        _fail(src, "max_failures", err + " (-1 = retry forever)")

    sections = {}
    for sec, keys in SECTIONS.items():
        given = _check_section(src, "", sec, raw.get(sec, {}))
        sections[sec] = {k: given.get(k, copy.deepcopy(d)) for k, (_, d) in keys.items()}

    grid = _grid_values(src, raw.get("grid"))
    per = raw.get("per_workload", {}) or {}
    if not isinstance(per, dict):
        _fail(src, "per_workload", "must be a mapping of workload -> overrides")
    for wl, over in per.items():
        if wl not in WORKLOADS:
            _fail(src, f"per_workload.{wl}", f"unknown workload; allowed: {', '.join(WORKLOADS)}")
        if not isinstance(over, dict):
            _fail(src, f"per_workload.{wl}", "must be a mapping of section -> settings")
        for sec, vals in over.items():
            if sec not in SECTIONS:
                _fail(src, f"per_workload.{wl}.{sec}", f"unknown section; allowed: {', '.join(SECTIONS)}")
            _check_section(src, f"per_workload.{wl}.", sec, vals)

    trials = []
    for wl, opt, wd, seed in itertools.product(*(grid[a] for a in GRID_AXES)):
        over = per.get(wl, {})
        resolved = {sec: _merge(sections[sec], over.get(sec, {})) for sec in SECTIONS}
        trials.append(TrialSpec(trial_id_for(wl, opt, wd, seed), wl, opt, wd, seed,
                                resolved["train"], resolved["optimizer"], resolved["monitor"],
                                resolved["stop"]))
    ids = [t.trial_id for t in trials]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        _fail(src, "grid", f"values that are equal as numbers give the same trial twice: {', '.join(dupes)}")
    _validate_with_components(src, trials, per)
    return SweepSpec(name=name, storage=storage, trial_resources=resources,
                     max_failures=max_failures, trials=tuple(trials), source=src, raw=raw)


_FIELD_TO_KEY = {"model_overrides": "train.model", "task_overrides": "train.task",
                 **{f: f"optimizer.{f}" for f in SECTIONS["optimizer"]},
                 **{f: f"train.{f}" for f in SECTIONS["train"]}}


def _spec_key(message: str, workload) -> str:
    """The spec key a TrainConfig error is about ("TrainConfig.momentum: …" → optimizer.momentum)."""
    m = re.search(r"TrainConfig\.(\w+)", message)
    key = _FIELD_TO_KEY.get(m.group(1), m.group(1)) if m else "train"
    return f"per_workload.{workload}.{key} (or {key})" if workload else key


def _validate_with_components(src: str, trials: list[TrialSpec], per: dict) -> None:
    """Build each workload's TrainConfig and MonitorConfig once, so that what only the
    components know (model/task override keys, momentum range, …) fails here, before any
    cluster starts, instead of inside every retry of every trial."""
    from ..spectral.monitor import MonitorConfig
    from .trainable import train_config_for

    seen = set()
    for trial in trials:
        key = (trial.workload, trial.optimizer)
        if key in seen:
            continue
        seen.add(key)
        try:
            train_config_for(trial).resolve()
        except (ValueError, TypeError) as exc:
            _fail(src, _spec_key(str(exc), trial.workload in per and trial.workload), f"trial {trial.trial_id}: {exc}")
        try:
            MonitorConfig(**trial.monitor)
        except (ValueError, TypeError) as exc:
            _fail(src, "monitor", str(exc))


def load_spec(path: str | Path, storage: str | None = None) -> SweepSpec:
    """Read and validate a sweep YAML file; ``storage`` overrides its storage root."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: sweep spec file not found")
    try:
        text = p.read_text()
        # The optional shebang line is a YAML comment already; nothing to strip.
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: cannot read: {exc}") from None
    if storage is not None and isinstance(raw, dict):
        raw = dict(raw, storage=storage)
    return parse_spec(raw, str(p))
