"""Optimisers (AdamW, Muon, SGD with momentum), weight-decay selection and LR schedules.

Weight decay is an experimental axis here, so *which* tensors it touches is explicit:

* ``decay="all"`` — every parameter, exactly like a bare ``AdamW(model.parameters(),
  weight_decay=wd)`` (what the paper's scripts do);
* ``decay="matrices"`` — only tensors with ≥ 2 dimensions (weight matrices and embeddings;
  biases and LayerNorm gains/shifts are exempt), the nanoGPT convention.

Muon (``torch.optim.Muon``) only handles 2-D hidden matrices: the ``nn.Linear`` weights inside
the network body. Embeddings, output heads (``model.output_modules``), tied matrices and every
1-D tensor go to AdamW, as Muon is meant to be used. Muon runs with
``adjust_lr_fn="match_rms_adamw"`` (Moonshot's scaling, 0.2·√max(A, B)), which makes its update
RMS match AdamW's, so one ``lr`` and one ``weight_decay`` mean the same thing for both halves —
needed for a weight-decay axis that compares optimisers.

SGD uses torch's *coupled* L2 weight decay (the gradient gets wd·θ added), not AdamW's decoupled
decay; with momentum 0.9 the effective per-step shrink is larger than lr·wd.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .catalog import DECAY_MODES, OPTIMIZERS, SCHEDULES  # noqa: F401  (names live in the catalog)


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D hidden matrices Muon should own: weights of ``nn.Linear`` layers outside the
    model's ``output_modules`` and not shared with an embedding (weight tying)."""
    outputs = tuple(getattr(model, "output_modules", ()))
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    chosen, seen = [], set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(name == o or name.startswith(o + ".") for o in outputs):
            continue
        w = module.weight
        if w.ndim == 2 and id(w) not in embedding_ids and id(w) not in seen:
            seen.add(id(w))
            chosen.append(w)
    return chosen


def _decay_split(params: list[nn.Parameter], decay: str):
    if decay == "all":
        return params, []
    if decay == "matrices":
        return [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
    raise ValueError(f"decay must be one of {DECAY_MODES}, got {decay!r}")


class CombinedOptimizer:
    """Several optimisers stepped as one (Muon for hidden matrices + AdamW for the rest).

    Exposes the part of the ``torch.optim.Optimizer`` interface the training loop uses:
    ``param_groups`` (all groups, in order), ``zero_grad``, ``step``, ``state_dict``,
    ``load_state_dict``.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self):
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        states = state["optimizers"]
        if len(states) != len(self.optimizers):
            raise ValueError(f"optimizer state holds {len(states)} optimisers, expected {len(self.optimizers)}")
        for opt, s in zip(self.optimizers, states):
            opt.load_state_dict(s)


def build_optimizer(model: nn.Module, optimizer: str = "adamw", lr: float = 1e-3,
                    weight_decay: float = 0.0, decay: str = "all",
                    betas: tuple[float, float] = (0.9, 0.999), momentum: float = 0.9):
    """An optimiser over ``model.parameters()``; every param group carries ``base_lr`` (the
    schedule multiplies it) and ``name``. Returns a ``torch.optim.Optimizer`` or, for Muon, a
    :class:`CombinedOptimizer`."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    params = list(model.parameters())  # deduplicated by nn.Module (tied weights appear once)

    def groups(ps, prefix=""):
        decayed, exempt = _decay_split(ps, decay)
        out = [{"params": decayed, "weight_decay": weight_decay, "name": prefix + "decay"}]
        if exempt:
            out.append({"params": exempt, "weight_decay": 0.0, "name": prefix + "no_decay"})
        return [g for g in out if g["params"]]

    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups(params), lr=lr, betas=tuple(betas))
    elif optimizer == "sgd":
        opt = torch.optim.SGD(groups(params), lr=lr, momentum=momentum)
    else:
        hidden = muon_parameters(model)
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in params if id(p) not in hidden_ids]
        # Muon's matrices are all ≥ 2-D, so both decay modes decay them.
        muon = torch.optim.Muon(
            [{"params": hidden, "weight_decay": weight_decay, "name": "muon"}],
            lr=lr, momentum=momentum, nesterov=True, adjust_lr_fn="match_rms_adamw",
        )
        parts = [muon]
        if rest:
            parts.append(torch.optim.AdamW(groups(rest, "adamw_"), lr=lr, betas=tuple(betas)))
        opt = CombinedOptimizer(parts)
    for g in opt.param_groups:
        g["base_lr"] = lr
    return opt


def lr_factor(step: int, schedule: str, warmup_steps: int, max_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the base LR for the update of ``step`` (1-based).

    Both schedules warm up linearly over ``warmup_steps`` (factor step/warmup). ``constant``
    then stays at 1; ``warmup_cosine`` decays by a half cosine to ``min_ratio`` at
    ``max_steps`` (nanoGPT's min_lr = lr/10).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if warmup_steps > 0 and step <= warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(opt, factor: float) -> float:
    """Set every group's lr to base_lr · factor; returns the lr of the first group."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor
    return opt.param_groups[0]["lr"]
