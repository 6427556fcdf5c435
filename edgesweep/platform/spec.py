"""Sweep specs: YAML → pydantic models → one fully resolved :class:`TrialSpec` per trial.

The models below are the single source of truth from the YAML file to the trial: each field has
its constraint and its one default (taken from the config class it feeds — ``TrainConfig``,
``MonitorConfig``, the analysis thresholds — so a default is written once), unknown keys are
errors, and what only a component knows (a model width that is not a multiple of the heads, a
modulus the data generator refuses, a monitor selector that matches no parameter of the model)
is checked here by building those components' configs, before Ray is imported. Every error is
one :class:`SpecError` line naming the file, the key path, the line and what is allowed.

Axes. ``grid`` maps axis → values. The axes ``workload``, ``optimizer`` (its name),
``weight_decay`` and ``seed`` are the trial's identity; any other axis is a key path into a
section (``optimizer.lr``, ``train.task.train_frac``, ``train.model.d_model``,
``monitor.window``…). ``method: grid`` (default) takes the cross product of value lists;
``method: random`` draws ``samples`` conditions with the sampler ``seed`` from lists (uniform
choice) or distributions (``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{log_uniform: [lo,
hi]}``, ``{int_uniform: [lo, hi]}``, each optionally with ``p_zero``: the probability of exactly
0). Conditions are expanded up front, not by Tune's samplers: the trial list must be known
before anything runs (``edgesweep plan``, trial ids that are stable across restarts and name
every varied axis, resume that finds the same trials), and a seeded numpy generator makes the
draw a pure function of the file. Precedence: section defaults < the spec's sections <
``per_workload`` overrides < axis values.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import os
import re
from dataclasses import dataclass, field, fields as dc_fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError, field_validator,
                      model_validator)

from ..analysis.events import GROK_THRESHOLD, MEMORIZATION_THRESHOLD
from ..spectral.config import MAX_WINDOW, MonitorConfig
from ..storage.errors import StorageError
from ..storage.fs import resolve_root
from ..storage.layout import check_name
from ..workloads.catalog import DECAY_MODES, DEVICES, OPTIMIZERS, PRESETS, SCHEDULES, WORKLOADS
from ..workloads.train_config import TrainConfig
from .spec_yaml import YamlProblem, load_yaml

__all__ = ["SpecError", "TrialSpec", "SweepSpec", "parse_spec", "load_spec", "DEFAULT_MAX_TRIALS",
           "IDENTITY_AXES"]

IDENTITY_AXES = ("workload", "optimizer", "weight_decay", "seed")
DEFAULT_MAX_TRIALS = 10_000
SEED_MAX = 2**63 - 1  # torch.manual_seed takes a 64-bit seed; numpy's is reduced mod 2^32


class SpecError(ValueError):
    """A sweep spec that cannot run. The message is meant to be shown as is."""


# ------------------------------------------------------------------------------------------
# Field types: YAML numbers as a user means them, nothing else
# ------------------------------------------------------------------------------------------

def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"must be an integer, got {v!r}")
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return int(v)  # 1e3 written in YAML is the integer 1000
    if isinstance(v, int):
        return v
    raise ValueError(f"must be an integer, got {v!r}")


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v!r}")
    return float(v)


Int = Annotated[int, BeforeValidator(_int)]
Float = Annotated[float, BeforeValidator(_float)]


def _defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dc_fields(cls)}


_TRAIN = _defaults(TrainConfig)
_MONITOR = _defaults(MonitorConfig)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSection(_Section):
    preset: Literal[PRESETS] = _TRAIN["preset"]
    max_steps: Int = Field(_TRAIN["max_steps"], ge=1, le=10**9)
    eval_every: Int = Field(_TRAIN["eval_every"], ge=1)
    checkpoint_every: Int = Field(_TRAIN["checkpoint_every"], ge=1)
    batch_size: Int | None = Field(_TRAIN["batch_size"], ge=1, le=1 << 24)
    data_seed: Int = Field(_TRAIN["data_seed"], ge=0, le=SEED_MAX)
    device: Literal[DEVICES] = _TRAIN["device"]
    amp: StrictBool = _TRAIN["amp"]  # YAML true/false only: 1 or "yes" is a typo, not a choice
    model: dict[str, Any] = Field(default_factory=dict)
    task: dict[str, Any] = Field(default_factory=dict)


class OptimizerSection(_Section):
    lr: Float | None = Field(_TRAIN["lr"], gt=0)
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] | None = _TRAIN["betas"]
    momentum: Float = Field(_TRAIN["momentum"], ge=0, lt=1)
    decay: Literal[DECAY_MODES] = _TRAIN["decay"]
    grad_clip: Float | None = Field(_TRAIN["grad_clip"], gt=0)
    schedule: Literal[SCHEDULES] = _TRAIN["schedule"]
    warmup_steps: Int = Field(_TRAIN["warmup_steps"], ge=0)


class MonitorSection(_Section):
    window: Int = Field(_MONITOR["window"], ge=2, le=MAX_WINDOW)
    every: Int = Field(_MONITOR["every"], ge=1)
    params: str = _MONITOR["params"]
    sketch_dim: Int | None = Field(_MONITOR["sketch_dim"], ge=1, le=1 << 24)
    sketch_seed: Int = Field(_MONITOR["sketch_seed"], ge=0, le=SEED_MAX)
    accumulate: Literal["float64", "block"] = _MONITOR["accumulate"]

    @model_validator(mode="after")
    def _through_monitor_config(self):
        MonitorConfig(**self.model_dump())  # the regex, and whatever else the class checks
        return self


class StopSection(_Section):
    after_grok: Int | None = Field(None, ge=0)  # stop this many steps after the grok step
    grok_threshold: Float = Field(GROK_THRESHOLD, gt=0, le=1)
    memo_threshold: Float = Field(MEMORIZATION_THRESHOLD, gt=0, le=1)


SECTIONS: dict[str, type[_Section]] = {"train": TrainSection, "optimizer": OptimizerSection,
                                       "monitor": MonitorSection, "stop": StopSection}


class Resources(_Section):
    cpu: Float = Field(1.0, ge=0)
    gpu: Float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _some(self):
        if self.cpu <= 0 and self.gpu <= 0:
            raise ValueError("a trial needs some cpu or gpu")
        return self


class Block(BaseModel):
    """One sub-space of a sweep: its own draws (or grid) over the top level's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=40)]
    samples: Int | None = Field(None, ge=1)
    grid: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    optimizer: dict[str, Any] = Field(default_factory=dict)
    monitor: dict[str, Any] = Field(default_factory=dict)
    stop: dict[str, Any] = Field(default_factory=dict)
    per_workload: dict[str, Any] = Field(default_factory=dict)


# -- experiment trackers (`loggers:`), attached by the driver through Ray Tune's own logger
# callbacks (platform/trackers.py). Parquet stays the source of truth; these are views.
# No credential is a spec key: API keys and tokens come from the trackers' own environment
# variables or login files, so they never land in a file the sweep writes.

class MLflowLogger(_Section):
    tracking_uri: str | None = None       # default: $MLFLOW_TRACKING_URI, else a SQLite store in the sweep folder
    experiment_name: str | None = None    # default: the sweep name
    tags: dict[str, str] = Field(default_factory=dict)


class TensorBoardLogger(_Section):
    pass                                  # event files go to <sweep>/_tune/<trial_id>/


class WandbLogger(_Section):
    project: str | None = None            # default: the sweep name
    entity: str | None = None
    group: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None   # default: W&B's own ($WANDB_MODE)
    dir: str | None = None                # default: <sweep>/_wandb (local storage)
    tags: list[str] = Field(default_factory=list)


def _logger_mapping(v: Any) -> Any:
    """``[mlflow, tensorboard]`` or ``[mlflow, {wandb: {mode: offline}}]`` → a mapping; a name
    without options (``mlflow:`` / ``mlflow: null``) gets the defaults."""
    if isinstance(v, list):
        out: dict[str, Any] = {}
        for item in v:
            if isinstance(item, str):
                name, opts = item, {}
            elif isinstance(item, dict) and len(item) == 1:
                (name, opts), = item.items()
            else:
                raise ValueError(f"a logger is a name or {{name: options}}; got {item!r}")
            if name in out:
                raise ValueError(f"logger {name!r} is listed twice")
            out[name] = opts
        v = out
    if isinstance(v, dict):
        return {k: ({} if o is None else o) for k, o in v.items()}
    return v


class Loggers(_Section):
    mlflow: MLflowLogger | None = None
    tensorboard: TensorBoardLogger | None = None
    wandb: WandbLogger | None = None

    def chosen(self) -> dict[str, dict]:
        return {name: getattr(self, name).model_dump() for name in type(self).model_fields
                if getattr(self, name) is not None}


class SweepDoc(BaseModel):
    """The top level of a sweep YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=120)]
    description: str | None = None
    storage: Annotated[str, Field(min_length=1)] = "./results"
    trial_resources: Resources = Resources()
    max_failures: Int = Field(3, ge=-1)
    method: Literal["grid", "random"] = "grid"
    samples: Int | None = Field(None, ge=1)
    seed: Int = Field(0, ge=0, le=SEED_MAX)
    grid: dict[str, Any]  # axis → list, or a distribution mapping (checked in _conditions)
    train: TrainSection = TrainSection()
    optimizer: OptimizerSection = OptimizerSection()
    monitor: MonitorSection = MonitorSection()
    stop: StopSection = StopSection()
    per_workload: dict[Literal[WORKLOADS], dict[Literal[tuple(SECTIONS)], dict[str, Any]]] = Field(default_factory=dict)
    blocks: list[Block] | None = None
    loggers: Annotated[Loggers, BeforeValidator(_logger_mapping)] = Loggers()

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        return check_name("sweep", v)  # a table name or `_tune` would hide other sweeps' data


#: Section keys whose values are mappings merged key by key (an override of ``train.model``
#: changes the keys it names and keeps the rest), not replaced whole.
NESTED_KEYS = ("model", "task")


def merge_section(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys on top, one level deeper for :data:`NESTED_KEYS` — the one
    rule for a block's sections and for ``per_workload`` overrides."""
    out = dict(base)
    for k, v in over.items():
        nested = k in NESTED_KEYS and isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = {**out[k], **v} if nested else v
    return out


def _merge_block(raw: dict, block: Block) -> dict:
    """The spec a block stands for: the top level with the block's axes, section keys (one
    level deeper for ``train.model`` / ``train.task``), workload overrides and samples."""
    out = {k: v for k, v in raw.items() if k != "blocks"}
    out["grid"] = {**raw.get("grid", {}), **block.grid}
    for sec in SECTIONS:
        over = getattr(block, sec)
        if over:
            out[sec] = merge_section(raw.get(sec) or {}, over)
    # A block's workload override changes only the keys it names, like every other level: a
    # top-level per_workload.mod_add.train.max_steps survives the block's mod_add monitor keys.
    # (Values of the wrong type pass through as given, for validation to name.)
    top = raw.get("per_workload")
    merged = dict(top) if isinstance(top, dict) else {}
    for wl, over in block.per_workload.items():
        mine = merged.get(wl)
        if not (isinstance(over, dict) and isinstance(mine, dict)):
            merged[wl] = over
            continue
        mine = dict(mine)
        for sec, values in over.items():
            base = mine.get(sec)
            mine[sec] = merge_section(base, values) if isinstance(base, dict) and isinstance(values, dict) else values
        merged[wl] = mine
    out["per_workload"] = merged
    if block.samples is not None:
        out["samples"] = block.samples
    return out


# ------------------------------------------------------------------------------------------
# Trials
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSpec:
    """One condition, fully resolved. ``trial_id`` is stable across restarts and resumes;
    ``axes`` holds the values of the varied non-identity axes (key path → value)."""

    trial_id: str
    workload: str
    optimizer: str
    weight_decay: float
    seed: int
    train: dict
    optim: dict
    monitor: dict
    stop: dict
    axes: dict = field(default_factory=dict)
    block: str | None = None

    @property
    def partition(self) -> dict:
        """The storage partition of this trial's rows."""
        return {"workload": self.workload, "optimizer": self.optimizer, "weight_decay": self.weight_decay}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialSpec":
        """Inverse of :meth:`as_dict` (what travels in Tune's config and ``trials.config``)."""
        return cls(**{("optim" if k == "optimizer_settings" else k): v for k, v in d.items()})

    def as_dict(self) -> dict:
        return {"trial_id": self.trial_id, "workload": self.workload, "optimizer": self.optimizer,
                "weight_decay": self.weight_decay, "seed": self.seed, "train": self.train,
                "optimizer_settings": self.optim, "monitor": self.monitor, "stop": self.stop,
                "axes": self.axes, "block": self.block}

    def train_config(self) -> TrainConfig:
        fields = {f.name for f in dc_fields(TrainConfig)}
        settings = {k: v for sec in (self.train, self.optim) for k, v in sec.items() if k in fields}
        return TrainConfig(**settings, workload=self.workload, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, seed=self.seed, snapshot_every=self.monitor["every"],
                           model_overrides=dict(self.train["model"]), task_overrides=dict(self.train["task"]))

    def monitor_config(self) -> MonitorConfig:
        return MonitorConfig(**self.monitor)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    storage: str
    trial_resources: dict
    max_failures: int
    trials: tuple[TrialSpec, ...]
    method: str = "grid"
    source: str = "<memory>"
    notes: tuple[str, ...] = ()      # e.g. duplicate random draws that were redrawn
    loggers: dict = field(default_factory=dict)   # tracker name → options (`loggers:`)


# ------------------------------------------------------------------------------------------
# Errors: file, key path, line, what is allowed — one line
# ------------------------------------------------------------------------------------------


class _Located:
    def __init__(self, source: str, lines: dict[tuple, int], block: tuple = ()):
        self.source, self.lines, self.block = source, lines, block

    def within(self, block: tuple) -> "_Located":
        """Errors of a block's merged spec: a key the block sets is located in the block."""
        return _Located(self.source, self.lines, block)

    def fail(self, path: tuple | str, msg: str) -> SpecError:
        path = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
        if self.block and any(self.block + path[:i] in self.lines for i in range(len(path), 0, -1)):
            path = self.block + path
        line = next((self.lines[path[:i]] for i in range(len(path), 0, -1) if path[:i] in self.lines), None)
        text = _path_text(path) or "(top level)"
        where = f" (in {_path_text(self.block)})" if self.block and path[:len(self.block)] != self.block else ""
        return SpecError(f"{self.source}: {text}{f' (line {line})' if line else ''}{where}: {msg}")

    def from_validation(self, exc: ValidationError, prefix: tuple, model: type[BaseModel],
                        replace_loc: tuple | None = None) -> SpecError:
        """The first error of a pydantic ValidationError at ``prefix`` + its location (or at
        ``replace_loc``, e.g. the grid axis a value came from)."""
        err = exc.errors(include_url=False)[0]
        loc = tuple(x for x in err["loc"] if x != "[key]")
        return self.fail(replace_loc if replace_loc is not None else prefix + loc,
                         _message(err, model, err["loc"][:-1]))


_PHRASES = {"greater_than_equal": "must be ≥ {ge}", "greater_than": "must be > {gt}",
            "less_than_equal": "must be ≤ {le}", "less_than": "must be < {lt}",
            "string_pattern_mismatch": "must match {pattern}", "missing": "is required",
            "string_too_short": "must not be empty", "bool_type": "must be true or false",
            "string_type": "must be a string", "dict_type": "must be a mapping",
            "model_type": "must be a mapping of keys (key: value lines under it)",
            "list_type": "must be a list", "tuple_type": "must be a list of 2 numbers"}


def _message(err: dict, model: type[BaseModel], parent: tuple) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f"; got {err['input']!r}" if "input" in err and kind != "missing" else ""
    if kind == "extra_forbidden":
        allowed = _fields_at(model, parent)
        if allowed == []:
            return "unknown key; allowed: none (it takes no options: write it with no value)"
        return f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?').replace(' or ', ', ')}{got}"
    if kind in _PHRASES:
        return _PHRASES[kind].format(**ctx) + got
    return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _path_text(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: X itself, or inside ``X | None``, ``list[X]``…"""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, getattr(annotation, "__args__", ())) if m is not None), None)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys allowed at ``loc`` under ``model``; None where that is not a model's mapping."""
    for key in loc:
        if isinstance(key, int):
            continue  # an item of a list: the list's model, e.g. blocks[0] → Block
        info = model.model_fields.get(key)
        sub = _model_in(info.annotation) if info is not None else None
        if sub is None:
            return None
        model = sub
    return list(model.model_fields)


# Which spec key a component's error is about ("ModArithConfig.d_model: …" → train.model.d_model).
_COMPONENT_KEYS = {"Config": "train.model", "TaskConfig": "train.task"}
_TRAIN_FIELD_KEY = {"model_overrides": "train.model", "task_overrides": "train.task",
                    "snapshot_every": "monitor.every",
                    **{f: f"optimizer.{f}" for f in OptimizerSection.model_fields},
                    **{f: f"train.{f}" for f in TrainSection.model_fields}}


def _component_key(message: str) -> str:
    m = re.match(r"(\w+?)(TaskConfig|Config)\.(\w+)", message)
    if not m:
        return "train"
    cls, kind, fname = m.groups()
    if cls == "Train" and kind == "Config":
        return _TRAIN_FIELD_KEY.get(fname, f"train.{fname}")
    return f"{_COMPONENT_KEYS[kind]}.{fname}"


# ------------------------------------------------------------------------------------------
# Axes and draws
# ------------------------------------------------------------------------------------------

_SECTION_PREFIX = {"train.": "train", "optimizer.": "optimizer", "monitor.": "monitor", "stop.": "stop"}


def _axis_target(axis: str) -> tuple[str, tuple[str, ...]] | None:
    """(section, key path inside it) of a key-path axis; None for an identity axis."""
    if axis in IDENTITY_AXES:
        return None
    for prefix, sec in _SECTION_PREFIX.items():
        if axis.startswith(prefix) and len(axis) > len(prefix):
            return sec, tuple(axis[len(prefix):].split("."))
    raise ValueError("unknown axis; allowed: " + ", ".join(IDENTITY_AXES)
                     + ", or a key path such as optimizer.lr, train.task.train_frac, monitor.window")


def _round_sig(x: float, digits: int = 3) -> float:
    """3 significant digits: a drawn value then reads the same in the trial id, the tables and
    a YAML file, and equal draws are recognisably equal."""
    return 0.0 if x == 0 else float(f"{x:.{digits - 1}e}")


class _Draw:
    """A distribution of one random-search axis (see the module docstring)."""

    def __init__(self, spec: list | dict):
        self.p_zero = 0.0
        if isinstance(spec, list):
            spec = {"choice": spec}
        spec = dict(spec)
        if "p_zero" in spec:
            self.p_zero = _float(spec.pop("p_zero"))
            if not 0 <= self.p_zero <= 1:
                raise ValueError(f"p_zero must be in [0, 1], got {self.p_zero}")
        if len(spec) != 1 or next(iter(spec)) not in ("choice", "uniform", "log_uniform", "int_uniform"):
            raise ValueError(f"a distribution is one of choice, uniform, log_uniform, int_uniform "
                             f"(plus optional p_zero); got {sorted(spec)}")
        (self.kind, args), = spec.items()
        if self.kind == "choice":
            if not isinstance(args, list) or not args:
                raise ValueError("choice needs a non-empty list")
            self.values = args
            return
        if not (isinstance(args, list) and len(args) == 2):
            raise ValueError(f"{self.kind} needs [low, high]")
        lo, hi = (_int(a) for a in args) if self.kind == "int_uniform" else (_float(a) for a in args)
        if not lo < hi or (self.kind == "log_uniform" and lo <= 0):
            raise ValueError(f"{self.kind} needs low < high{' and low > 0' if self.kind == 'log_uniform' else ''}, got {args}")
        # What numpy's generator can draw: int64 bounds (high + 1 included), a finite width.
        if self.kind == "int_uniform" and not -2**63 <= lo < hi < 2**63 - 1:
            raise ValueError(f"int_uniform needs bounds within ±9.2e18 (64-bit integers), got {args}")
        if self.kind == "uniform" and not math.isfinite(hi - lo):
            raise ValueError(f"uniform needs high − low to be a finite number, got {args}")
        self.lo, self.hi = lo, hi

    def sample(self, rng) -> Any:
        if self.p_zero and rng.random() < self.p_zero:
            return 0 if self.kind == "int_uniform" else 0.0
        if self.kind == "choice":
            return copy.deepcopy(self.values[int(rng.integers(len(self.values)))])
        if self.kind == "int_uniform":
            return int(rng.integers(self.lo, self.hi + 1))
        if self.kind == "uniform":
            return _round_sig(float(rng.uniform(self.lo, self.hi)))
        return _round_sig(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))


_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,+=-]+$")


def _id_value(v: Any) -> str | None:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    text = str(v)
    return text if _SAFE_VALUE.match(text) else None


def _trial_id(identity: dict, axes: dict, short: dict[str, str], index: dict[str, int]) -> str:
    base = (f"{identity['workload']}-{identity['optimizer']}-wd{float(identity['weight_decay'])!r}"
            f"-s{identity['seed']}")
    parts = []
    for axis, value in axes.items():
        text = _id_value(value)
        parts.append(f"{short[axis]}{text if text is not None else f'v{index[axis] or 0}'}")
    return "-".join([base] + parts)


def _short_names(axes: list[str]) -> dict[str, str]:
    """The last key of each axis path, or the whole path where two axes share a last key."""
    last = {a: a.rsplit(".", 1)[-1] for a in axes}
    clash = {n for n in last.values() if list(last.values()).count(n) > 1}
    return {a: (a if n in clash else n) for a, n in last.items()}


def _set_path(d: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        d = d.setdefault(key, {})
        if not isinstance(d, dict):
            raise ValueError(f"{key} is not a mapping")
    d[path[-1]] = value


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------


def _conditions(doc: SweepDoc, at: _Located, seed_key: tuple = ()) -> tuple[list[dict], list[str]]:
    """Each condition: {axis: value}, every identity axis present. Linear in the number of
    conditions (ids de-duplicated with a set)."""
    grid = dict(doc.grid)
    if "workload" not in grid:
        raise at.fail(("grid", "workload"), "is required (a list of workloads)")
    for axis in grid:
        try:
            _axis_target(axis)
        except ValueError as exc:
            raise at.fail(("grid", axis), str(exc)) from None
    defaults = {"optimizer": ["adamw"], "weight_decay": [1.0], "seed": [42]}
    notes: list[str] = []
    if doc.method == "grid":
        for axis, vals in grid.items():
            if not isinstance(vals, list):
                raise at.fail(("grid", axis), f"is one value ({vals!r}); a grid axis is a list: [{vals}]"
                              if not isinstance(vals, dict) else
                              "a distribution needs method: random; with method: grid give a list")
            if not vals:
                raise at.fail(("grid", axis), "must not be empty")
        axes = list(IDENTITY_AXES) + [a for a in grid if a not in IDENTITY_AXES]
        lists = [grid.get(a, defaults.get(a)) for a in axes]
        return [dict(zip(axes, combo)) for combo in itertools.product(*lists)], notes
    import numpy as np

    draws = {}
    for axis in list(IDENTITY_AXES) + [a for a in grid if a not in IDENTITY_AXES]:
        try:
            draws[axis] = _Draw(grid.get(axis, defaults.get(axis)))
        except ValueError as exc:
            raise at.fail(("grid", axis), str(exc)) from None
    rng = np.random.default_rng([doc.seed, *seed_key])  # blocks draw from streams of their own
    out, seen, tries = [], set(), 0
    while len(out) < doc.samples and tries < 50 * doc.samples:
        tries += 1
        cond = {a: d.sample(rng) for a, d in draws.items()}
        key = repr(sorted((a, repr(v)) for a, v in cond.items()))
        if key not in seen:
            seen.add(key)
            out.append(cond)
    if tries > len(out):
        notes.append(f"{tries - len(out)} duplicate draw(s) redrawn")
    if len(out) < doc.samples:
        notes.append(f"only {len(out)} distinct conditions exist; samples: {doc.samples} asked for more")
    return out, notes


class Identity(_Section):
    """The identity axes of one condition."""

    workload: Literal[WORKLOADS]
    optimizer: Literal[OPTIMIZERS]
    weight_decay: Float = Field(ge=0)
    seed: Int = Field(ge=0, le=SEED_MAX)


def _identity(at: _Located, cond: dict, grid: dict) -> dict:
    try:
        return Identity.model_validate({a: cond[a] for a in IDENTITY_AXES}).model_dump()
    except ValidationError as exc:
        axis = exc.errors()[0]["loc"][0]
        i = _value_index({axis: cond[axis]}, grid)[axis]
        raise at.from_validation(exc, (), Identity, ("grid", axis) + ((i,) if i is not None else ())) from None


def _check_storage_root(storage: str, at: "_Located") -> None:
    """The storage root as the storage layer reads it (no I/O): ``S3://``, ``http://``,
    ``s3:/x``, ``s3:///x`` are spec errors before anything starts. A ``~user/…`` root is left to
    the machine that runs the driver (a submitting laptop may have no such user)."""
    if storage.startswith("~"):
        return
    try:
        resolve_root(storage)
    except StorageError as exc:
        raise at.fail(("storage",), str(exc)) from None


def parse_spec(raw: Any, source: str = "<memory>", lines: dict[tuple, int] | None = None,
               max_trials: int = DEFAULT_MAX_TRIALS) -> SweepSpec:
    """Validate a parsed YAML document and expand it into trials (see the module docstring).
    With ``blocks``, each block is the top level merged with the block's keys, expanded on its
    own (random draws from a stream of its own), and the trials are concatenated."""
    at = _Located(source, lines or {})
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the sweep spec must be a YAML mapping at the top level")
    doc = _validated(raw, at)
    _check_storage_root(doc.storage, at)
    parts = [(None, doc, ())]
    for i, block in enumerate(doc.blocks or ()):
        parts.append((block.name, _validated(_merge_block(raw, block), at.within(("blocks", i))), (i,)))
    if doc.blocks:
        parts = parts[1:]
    trials, notes, ids = [], [], set()
    for name, sub, key in parts:
        t, n = _expand(sub, at.within(("blocks", key[0])) if key else at, max_trials - len(trials), name, key)
        for trial in t:
            if trial.trial_id in ids:
                raise at.fail(("blocks",), f"two blocks give the same trial: {trial.trial_id}")
            ids.add(trial.trial_id)
        trials += t
        notes += [f"block {name}: {x}" if name else x for x in n]
    res = doc.trial_resources
    for t in trials:
        if t.train["device"] == "cuda" and res.gpu <= 0:
            raise at.fail(("train", "device"), "cuda needs trial_resources.gpu > 0 (a trial without a "
                          "GPU share sees no CUDA device); allowed here: auto, cpu")
    _check_components(at, trials, doc)
    notes += _corpus_notes(at, trials, doc)
    notes += _unused_settings(doc, trials)
    return SweepSpec(name=doc.name, storage=doc.storage, trial_resources={"cpu": res.cpu, "gpu": res.gpu},
                     max_failures=doc.max_failures, trials=tuple(trials), method=doc.method,
                     source=source, notes=tuple(notes), loggers=doc.loggers.chosen())


def _validated(raw: dict, at: _Located) -> SweepDoc:
    try:
        doc = SweepDoc.model_validate(raw)
    except ValidationError as exc:
        raise at.from_validation(exc, (), SweepDoc) from None
    if doc.blocks is None and doc.method == "random" and doc.samples is None:
        raise at.fail(("method",), "random needs samples: N (the number of conditions to draw)")
    if doc.method == "grid" and doc.samples is not None:
        raise at.fail(("samples",), "is only for method: random; allowed with method: grid: nothing")
    # per_workload overrides: checked against the full section models now, so a typo fails
    # with its own key path even if no trial of that workload were generated.
    for wl, over in doc.per_workload.items():
        for sec, values in over.items():
            try:
                SECTIONS[sec].model_validate(merge_section(getattr(doc, sec).model_dump(), values))
            except ValidationError as exc:
                raise at.from_validation(exc, ("per_workload", wl, sec), SECTIONS[sec]) from None
    return doc


def _expand(doc: SweepDoc, at: _Located, max_trials: int, block: str | None,
            seed_key: tuple) -> tuple[list[TrialSpec], list[str]]:
    n = 1
    if doc.method == "grid":
        for axis in set(doc.grid) | {"workload"}:
            vals = doc.grid.get(axis, [None])
            n *= len(vals) if isinstance(vals, list) else 1
    else:
        n = doc.samples
    if n > max_trials:
        raise at.fail(("grid",) if doc.method == "grid" else ("samples",),
                      f"{n:,} trials exceed the limit of {max_trials:,}; pass --max-trials {n} to run them")
    conditions, notes = _conditions(doc, at, seed_key)
    extra_axes = [a for a in doc.grid if a not in IDENTITY_AXES]
    short = _short_names(extra_axes)
    trials, ids = [], set()
    for cond in conditions:
        ident = _identity(at, cond, doc.grid)
        over = doc.per_workload.get(ident["workload"], {})
        sections = {s: merge_section(getattr(doc, s).model_dump(), over.get(s, {})) for s in SECTIONS}
        axes = {a: cond[a] for a in extra_axes}
        for axis, value in axes.items():
            sec, path = _axis_target(axis)
            try:
                _set_path(sections[sec], path, value)
            except ValueError as exc:
                raise at.fail(("grid", axis), str(exc)) from None
        resolved = {}
        for sec, model in SECTIONS.items():
            try:
                resolved[sec] = model.model_validate(sections[sec]).model_dump()
            except ValidationError as exc:
                key = ".".join(map(str, (sec,) + exc.errors()[0]["loc"]))
                raise at.from_validation(exc, (sec,), model, _where(key, axes, doc, ident["workload"])) from None
        tid = _trial_id(ident, axes, short, _value_index(axes, doc.grid))
        try:
            check_name("trial_id", tid)  # it names the trial's files: too long a name cannot be stored
        except ValueError as exc:
            raise at.fail(("grid",), f"{exc}: fewer or shorter varied keys and values, or shorter block "
                          "names, make it shorter") from None
        if tid in ids:
            raise at.fail(("grid",), f"two grid points give the same trial: {tid} (a value listed twice, "
                          "or values equal as numbers such as 1 and 1.0)")
        ids.add(tid)
        trials.append(TrialSpec(tid, **ident, train=resolved["train"], optim=resolved["optimizer"],
                                monitor=resolved["monitor"], stop=resolved["stop"], axes=axes, block=block))
    return trials, notes


def _unused_settings(doc: SweepDoc, trials: list[TrialSpec]) -> list[str]:
    """Notes on settings that are valid but do nothing: a ``per_workload`` entry for a workload
    no trial trains, and a snapshot interval that leaves a trial without a single window (the
    first is at step 2·every: snapshots at 0, every and 2·every make its two updates)."""
    notes = []
    used = {t.workload for t in trials}
    for wl in sorted(set(doc.per_workload) - used):
        notes.append(f"per_workload.{wl}: no trial trains {wl}, so this override is unused")
    empty: dict[tuple[int, int], int] = {}
    for t in trials:  # the resolved sections, as train_config() passes them on (building that costs ms)
        every, steps = t.monitor["every"], t.train["max_steps"]
        if 2 * every > steps:
            empty[(every, steps)] = empty.get((every, steps), 0) + 1
    for (every, steps), n in sorted(empty.items()):
        notes.append(f"{n} trial(s) will write no features rows: monitor.every = {every} with train.max_steps = "
                     f"{steps} (the first window ends at step 2·every = {2 * every})")
    return notes


def _corpus_notes(at: _Located, trials: list[TrialSpec], doc: SweepDoc) -> list[str]:
    """A text corpus is read by each trial on its own node, in the trial's own working
    directory (Tune changes into it), so a relative path cannot work there: an error now, not
    a failure in every retry of every trial. A missing absolute path is only a note: the node
    that trains may have a file this machine lacks."""
    notes = []
    for corpus in sorted({t.train["task"].get("corpus") for t in trials} - {None}, key=str):
        t = next(t for t in trials if t.train["task"].get("corpus") == corpus)
        path = str(corpus)
        if not (path.startswith("~") or os.path.isabs(path)):
            raise at.fail(_locate("train.task.corpus", t, doc),
                          f"{path!r} is a relative path; a trial runs in its own working directory, so give "
                          "an absolute path (or one that starts with ~)")
        if not os.path.isfile(os.path.expanduser(path)):
            users = sorted({u.workload for u in trials if u.train["task"].get("corpus") == corpus})
            notes.append(f"train.task.corpus: {path} is not a file on this machine; trials of "
                         f"{', '.join(users)} fail unless it exists on the node that trains them")
    return notes


def _value_index(axes: dict, grid: dict) -> dict[str, int | None]:
    """Position of each axis value in its grid list (None for a drawn value)."""
    out = {}
    for axis, v in axes.items():
        vals = grid.get(axis)
        out[axis] = next((i for i, x in enumerate(vals) if x == v and type(x) is type(v)), None) \
            if isinstance(vals, list) else None
    return out


def _where(key: str, axes: dict, doc: SweepDoc, workload: str) -> tuple:
    """The spec location a resolved key of a trial came from: its grid axis (and the value's
    position there), else the workload's override, else the section key."""
    for axis in axes:
        if key == axis or key.startswith(axis + ".") or axis.startswith(key + "."):
            i = _value_index({axis: axes[axis]}, doc.grid)[axis]
            return ("grid", axis) + ((i,) if i is not None else ())
    sec, _, rest = key.partition(".")
    over = doc.per_workload.get(workload, {}).get(sec, {})
    head, _, tail = rest.partition(".")
    if head in over and (not tail or head not in NESTED_KEYS or not isinstance(over[head], dict)
                         or tail.split(".")[0] in over[head]):
        return ("per_workload", workload, sec, *rest.split("."))
    return tuple(key.split("."))


def _locate(key: str, t: TrialSpec, doc: SweepDoc) -> tuple:
    """:func:`_where` for a trial of the whole spec: inside its block when the block itself
    sets the key (an axis of the block's grid, its per_workload entry or its own section),
    else where the top level sets it."""
    if t.block is not None and doc.blocks:
        i, block = next((i, b) for i, b in enumerate(doc.blocks) if b.name == t.block)
        axes = {a: v for a, v in t.axes.items() if a in block.grid}
        where = _where(key, axes, block, t.workload)
        sec, _, rest = key.partition(".")
        node = getattr(block, sec, None)
        for part in rest.split(".") if rest else ():
            node = node.get(part) if isinstance(node, dict) else None
        if where[0] in ("grid", "per_workload") or node is not None:
            return ("blocks", i) + where
    return _where(key, t.axes, doc, t.workload)


def _check_components(at: _Located, trials: list[TrialSpec], doc: SweepDoc) -> None:
    """Build each distinct trial's TrainConfig (which builds its model and task configs) and
    match its monitor selector against the model's real parameter names (on torch's ``meta``
    device: shapes only) — what would otherwise fail inside every retry of every trial."""
    seen_cfg, seen_params = set(), set()
    for t in trials:
        key = repr((t.workload, t.optimizer, t.train, t.optim, t.weight_decay))
        if key not in seen_cfg:
            seen_cfg.add(key)
            try:
                t.train_config()
            except (ValueError, TypeError) as exc:
                raise at.fail(_locate(_component_key(str(exc)), t, doc),
                              f"trial {t.trial_id}: {exc}") from None
        pkey = repr((t.workload, t.train["preset"], t.train["model"], t.train["task"], t.monitor["params"]))
        if pkey not in seen_params:
            seen_params.add(pkey)
            problem = _selector_problem(t)
            if problem:
                raise at.fail(_locate("monitor.params", t, doc), f"trial {t.trial_id}: {problem}")


def _selector_problem(t: TrialSpec) -> str | None:
    from ..spectral.config import ATTENTION_PATTERN
    from ..workloads.table import parameter_names  # torch, meta device: no memory, no data

    sel = t.monitor["params"]
    if sel == "all":
        return None
    names = [n for n, _ in parameter_names(t.workload, t.train["preset"], t.train["model"], t.train["task"])]
    pattern = re.compile(ATTENTION_PATTERN if sel == "attention" else sel)
    if any(pattern.search(n) for n in names):
        return None
    close = difflib.get_close_matches(sel, names, n=3, cutoff=0.3) or names[:3]
    return (f"selector {sel!r} matches no parameter of the {t.workload} model; closest names: "
            f"{', '.join(close)} ({len(names)} parameters; 'attention' and 'all' are also allowed)")


def load_spec(path: str | Path, storage: str | None = None, max_trials: int = DEFAULT_MAX_TRIALS) -> SweepSpec:
    """Read and validate a sweep YAML file; ``storage`` overrides its storage root."""
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"{p}: is a directory; give a sweep spec file, e.g. sweeps/demo.yaml")
    if not p.is_file():
        raise SpecError(f"{p}: sweep spec file not found")
    try:
        raw, lines = load_yaml(p.read_text())  # a shebang line is a YAML comment already
    except YamlProblem as exc:
        raise SpecError(f"{p}{f' (line {exc.line})' if exc.line else ''}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: cannot read: {exc}") from None
    if storage is not None and isinstance(raw, dict):
        raw = dict(raw, storage=storage)
        lines = {k: v for k, v in lines.items() if k[:1] != ("storage",)}  # not the file's line now
    return parse_spec(raw, str(p), lines, max_trials=max_trials)
