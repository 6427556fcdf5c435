"""The training loop: one function, one plain config dataclass, callbacks, exact resume.

Step semantics (what callbacks see)::

    step 0      on_snapshot(0, model, lr)         before any update (lr = the lr of step 1)
                on_eval(0, metrics)               metrics of the initial model
    step s ≥ 1  sample batch → loss → backward → clip → optimizer step
                on_step(s, loss, lr)              loss of the batch *before* the update, lr used
                on_step_stats(s, {"loss", "lr", "grad_norm"})   (optional extra; grad_norm pre-clip)
                on_snapshot(s, model, lr)         if s % snapshot_every == 0
                on_eval(s, metrics)               if s % eval_every == 0 or s == max_steps;
                                                  returning True asks to stop after this step
                checkpoint_fn(s, state)           if s % checkpoint_every == 0, and once at the end

A non-finite loss or gradient norm ends the run with status "diverged" before the optimiser
touches the weights; no checkpoint is written for the diverged state (the last good one stands).

Reproducibility: the model is initialised from ``seed``; the data order comes from a dedicated
CPU ``torch.Generator`` seeded with ``seed``; the data themselves from ``data_seed``. The
checkpoint state holds model, optimiser, schedule position, every RNG state (torch, CUDA,
NumPy, Python, data-order generator) and each callback's ``state_dict()``, so a resumed run
repeats the uninterrupted one bit for bit on CPU (tested). On CUDA, kernels such as atomics-based
reductions can make even two uninterrupted runs differ in the last bits.
"""

from __future__ import annotations

import math
import platform
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .optim import build_optimizer, lr_factor, set_lr
from .registry import build_model, build_task, model_config
from .train_config import TrainConfig

STATE_FORMAT = "edgesweep.workloads.train_state/1"
# Config fields a resumed run may change: they do not alter the optimisation trajectory
# (max_steps only with the constant schedule).
RESUMABLE_CHANGES = ("max_steps", "eval_every", "snapshot_every", "checkpoint_every", "device")


@dataclass
class TrainResult:
    status: str                      # completed | stopped | diverged
    steps: int                       # optimiser steps completed
    metrics: dict                    # the last eval row ({} if none)
    wall_s: float                    # wall time of this call
    error: str | None = None         # why it diverged
    evals: list = field(default_factory=list)   # every eval row of the run (incl. resumed part)
    n_params: int = 0


# ------------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device: 'cuda' requested but no CUDA device is available; "
                         "allowed here: auto, cpu")
    return torch.device(name)


def compute_environment(device: torch.device) -> str:
    """What decides a run's floating-point results beyond its config, seed and torch version:
    the processor, the kernels torch picked for it and the thread count (CPU), or the GPU model,
    CUDA version and TF32 setting (CUDA). Two reruns of one trial agree bit for bit only where
    this agrees; elsewhere a grok step can move by an evaluation (README, reproducibility).
    Recorded in the trials table (``compute``)."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
        return (f"cuda: {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs), "
                f"CUDA {torch.version.cuda}, TF32 matmul {tf32}")
    threads = torch.get_num_threads()
    return (f"{device.type}: {_cpu_model()}, ATen {torch.backends.cpu.get_cpu_capability()} kernels, "
            f"{threads} thread{'s' if threads != 1 else ''}")


def _cpu_model() -> str:
    # /proc/cpuinfo's model name alone can be as vague as "AMD EPYC" in a VM; family and model
    # tell the generation (family 25 model 1: Zen 3, without AVX-512).
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _cpu_copy(obj):
    """Deep copy with every tensor detached and copied to CPU (a checkpoint must not alias
    live training tensors, which keep changing after checkpoint_fn returns)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _call_all(callbacks, method: str, *args) -> list:
    out = []
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            out.append(fn(*args))
    return out


def train(config: TrainConfig, callbacks: Iterable[Any] = (),
          checkpoint_fn: Callable[[int, dict], None] | None = None,
          resume_state: dict | None = None) -> TrainResult:
    """Train ``config.workload`` for ``config.max_steps`` optimiser steps; see the module doc."""
    t_start = time.perf_counter()
    cfg = config.resolve()
    callbacks = list(callbacks)
    device = resolve_device(cfg.device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cfg.amp and device.type == "cuda") else nullcontext

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    mcfg = model_config(cfg.workload, cfg.preset, cfg.task_overrides, cfg.model_overrides)
    task = build_task(cfg.workload, cfg.preset, cfg.task_overrides, cfg.data_seed, mcfg).to(device)
    model = build_model(cfg.workload, mcfg).to(device)
    opt = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.decay, cfg.betas, cfg.momentum)
    sampler = torch.Generator().manual_seed(cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters()]
    evals: list[dict] = []

    def lr_for(step: int) -> float:
        return set_lr(opt, lr_factor(step, cfg.schedule, cfg.warmup_steps, cfg.max_steps))

    def state(step: int) -> dict:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return _cpu_copy({
            "format": STATE_FORMAT,
            "config": cfg.to_dict(),
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            # The schedule is a pure function of the step; recorded for inspection.
            "scheduler": {"schedule": cfg.schedule, "warmup_steps": cfg.warmup_steps,
                          "max_steps": cfg.max_steps, "next_step": step + 1},
            "rng": rng,
            "data": {"sampler": sampler.get_state(), "next_step": step + 1},
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
            "evals": evals,
            # A checkpoint taken where a callback asked to stop (the stop rule met at this
            # step's evaluation) must not train on when resumed: nothing asks again before the
            # next evaluation, which would end the run one eval interval late.
            "stop_requested": stop,
        })

    def evaluate(step: int) -> bool:
        model.eval()
        row = task.evaluate(model, step, autocast)
        model.train()
        evals.append(row)
        return any(r is True for r in _call_all(callbacks, "on_eval", step, dict(row)))

    start = 0
    stop = False
    if resume_state is not None:
        start = _restore(resume_state, cfg, model, opt, sampler, callbacks)
        evals.extend(resume_state.get("evals", []))
        stop = bool(resume_state.get("stop_requested", False))
        # Everything in it is copied into live objects now. Drop this frame's reference, so that
        # a caller who handed the state over without keeping one frees it here: a whole training
        # state (with the monitor's ring: gigabytes for the large presets), held for nothing.
        resume_state = None
    else:
        _call_all(callbacks, "on_snapshot", 0, model, lr_for(1))
        stop = evaluate(0)

    model.train()
    status, error, step, last_ckpt = "completed", None, start, None
    while step < cfg.max_steps and not stop:
        step += 1
        lr = lr_for(step)
        batch = task.sample_batch(sampler, cfg.batch_size)
        with autocast():
            loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip is not None else math.inf)
        # Both numbers in one device-to-host copy, after the backward pass: reading the loss
        # before it made the host wait for the forward pass before it could queue the backward
        # one (on a GPU, a stall every step). float32 → float64 is exact: the same values as two
        # float() calls. A non-finite loss gives non-finite gradients, never applied: the step
        # is abandoned before opt.step(), as before.
        loss_val, grad_norm = torch.stack([loss.detach().double(), norm.detach().double()]).tolist()
        if not math.isfinite(loss_val):
            status, error = "diverged", f"non-finite training loss ({loss_val}) at step {step}"
            step -= 1
            break
        if not math.isfinite(grad_norm):
            status, error = "diverged", f"non-finite gradient norm ({grad_norm}) at step {step}"
            step -= 1
            break
        opt.step()

        _call_all(callbacks, "on_step", step, loss_val, lr)
        _call_all(callbacks, "on_step_stats", step, {"loss": loss_val, "lr": lr, "grad_norm": grad_norm})
        if step % cfg.snapshot_every == 0:
            _call_all(callbacks, "on_snapshot", step, model, lr)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            stop = evaluate(step)
        if checkpoint_fn is not None and step % cfg.checkpoint_every == 0:
            checkpoint_fn(step, state(step))
            last_ckpt = step
    if stop and status == "completed" and step < cfg.max_steps:
        status = "stopped"  # a stop request on the last step still counts as completed
    if checkpoint_fn is not None and status != "diverged" and last_ckpt != step:
        checkpoint_fn(step, state(step))
    return TrainResult(status=status, steps=step, metrics=dict(evals[-1]) if evals else {},
                       wall_s=time.perf_counter() - t_start, error=error, evals=evals, n_params=n_params)


def _restore(st: dict, cfg: TrainConfig, model, opt, sampler, callbacks) -> int:
    if st.get("format") != STATE_FORMAT:
        raise ValueError(f"resume_state: unknown format {st.get('format')!r}; expected {STATE_FORMAT!r}")
    saved = dict(st["config"])
    now = cfg.to_dict()
    may_change = set(RESUMABLE_CHANGES)
    if cfg.schedule == "warmup_cosine":
        may_change.discard("max_steps")  # the cosine decays towards max_steps: part of the trajectory
    diff = sorted(k for k in now if k not in may_change and saved.get(k) != now[k])
    if diff:
        raise ValueError(f"resume_state was written with a different config: fields {diff} differ "
                         f"(only {sorted(may_change)} may change on resume)")
    cb_states = st["callbacks"]
    if len(cb_states) != len(callbacks):
        raise ValueError(f"resume_state holds {len(cb_states)} callback states but {len(callbacks)} callbacks were given")
    model.load_state_dict(st["model"])
    # Optimizer.load_state_dict keeps the given tensors when dtype/device already match, so the
    # optimiser would then update the caller's resume_state in place: load a copy.
    opt.load_state_dict(_cpu_copy(st["optimizer"]))
    sampler.set_state(st["data"]["sampler"])
    torch.set_rng_state(st["rng"]["torch"])
    np.random.set_state(st["rng"]["numpy"])
    random.setstate(st["rng"]["python"])
    if "cuda" in st["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["rng"]["cuda"])
    for cb, s in zip(callbacks, cb_states):
        if s is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(s)
    return int(st["step"])
