"""The training configuration: one plain dataclass, validated on construction, no torch.

Kept apart from the training loop so that a sweep spec can build (and so validate) every
trial's TrainConfig without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .catalog import (DECAY_MODES, DEVICES, OPTIMIZERS, PRESETS, SCHEDULES, WORKLOADS, get_workload,
                      model_config, model_keys, task_keys)


def _bad(field_name: str, value: Any, allowed) -> ValueError:
    return ValueError(f"TrainConfig.{field_name}: got {value!r}; allowed: {allowed}")


@dataclass
class TrainConfig:
    workload: str            # mod_add mod_sub mod_mul mod_sq mod_sq_cross mod_cube multitask_2 multitask_3 dyck scan tinystories gpt2
    preset: str = "laptop"   # laptop | paper | tiny (tiny = smallest that runs each family in seconds, for tests)
    optimizer: str = "adamw"  # adamw | muon | sgd
    lr: float | None = None  # None -> the workload/preset default
    weight_decay: float = 1.0
    decay: str = "all"       # all | matrices
    betas: tuple[float, float] | None = None
    momentum: float = 0.9
    batch_size: int | None = None
    grad_clip: float | None = 1.0
    schedule: str = "constant"  # constant | warmup_cosine
    warmup_steps: int = 0
    max_steps: int = 5000
    eval_every: int = 100
    snapshot_every: int = 50
    checkpoint_every: int = 500
    seed: int = 42
    data_seed: int = 0
    device: str = "auto"      # auto | cpu | cuda
    amp: bool = False          # bf16 autocast on CUDA
    model_overrides: dict = field(default_factory=dict)  # e.g. {"d_model": 32}
    task_overrides: dict = field(default_factory=dict)   # e.g. {"p": 23}

    def __post_init__(self):
        self.validate()

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first bad field and what it accepts."""
        for name, allowed in (("workload", WORKLOADS), ("preset", PRESETS), ("optimizer", OPTIMIZERS),
                              ("decay", DECAY_MODES), ("schedule", SCHEDULES), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise _bad(name, getattr(self, name), ", ".join(allowed))
        if self.betas is not None:
            if isinstance(self.betas, list):
                self.betas = tuple(self.betas)  # YAML/JSON give lists
            if (not isinstance(self.betas, tuple) or len(self.betas) != 2
                    or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas)):
                raise _bad("betas", self.betas, "None or two numbers in [0, 1)")
        if self.lr is not None and not (_is_number(self.lr) and 0.0 < self.lr < math.inf):
            raise _bad("lr", self.lr, "None or a positive finite number")
        if not (_is_number(self.weight_decay) and 0.0 <= self.weight_decay < math.inf):
            raise _bad("weight_decay", self.weight_decay, "a finite number ≥ 0")
        if not (_is_number(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise _bad("momentum", self.momentum, "a number in [0, 1)")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and self.grad_clip > 0):
            raise _bad("grad_clip", self.grad_clip, "None (no clipping) or a positive number")
        if self.batch_size is not None and not (_is_int(self.batch_size) and self.batch_size > 0):
            raise _bad("batch_size", self.batch_size, "None or a positive integer")
        for name in ("max_steps", "eval_every", "snapshot_every", "checkpoint_every"):
            v = getattr(self, name)
            if not (_is_int(v) and v > 0):
                raise _bad(name, v, "a positive integer")
        if not (_is_int(self.warmup_steps) and self.warmup_steps >= 0):
            raise _bad("warmup_steps", self.warmup_steps, "an integer ≥ 0")
        for name in ("seed", "data_seed"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 0):
                raise _bad(name, getattr(self, name), "an integer ≥ 0")
        if not isinstance(self.amp, bool):
            raise _bad("amp", self.amp, "True or False")
        for name, keys in (("model_overrides", model_keys(self.workload)),
                           ("task_overrides", task_keys(self.workload))):
            d = getattr(self, name)
            if not isinstance(d, dict):
                raise _bad(name, d, "a dict")
            unknown = sorted(set(d) - keys)
            if unknown:
                raise ValueError(f"TrainConfig.{name}: unknown key(s) {unknown} for workload "
                                 f"{self.workload!r}; allowed: {sorted(keys)}")
        # The model and task config classes check the override values themselves.
        model_config(self.workload, self.preset, self.task_overrides, self.model_overrides)

    # -- defaults ------------------------------------------------------------------------------
    def resolve(self) -> "TrainConfig":
        """A copy with every ``None`` default filled from the workload/preset."""
        p = get_workload(self.workload).preset(self.preset)
        lr = self.lr if self.lr is not None else (p.sgd_lr if self.optimizer == "sgd" else p.lr)
        return dataclasses.replace(
            self, lr=lr, betas=tuple(self.betas) if self.betas is not None else p.betas,
            batch_size=self.batch_size if self.batch_size is not None else p.batch_size,
            model_overrides=dict(self.model_overrides), task_overrides=dict(self.task_overrides),
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["betas"] is not None:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a plain dict (e.g. a sweep spec); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; allowed: {sorted(names)}")
        if "workload" not in d:
            raise ValueError("TrainConfig.workload is required; allowed: " + ", ".join(WORKLOADS))
        return cls(**d)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
