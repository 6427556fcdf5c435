"""``describe_table()``: the workloads at a glance (what ``python -m edgesweep workloads`` prints)."""

from __future__ import annotations

import re

import torch

from .catalog import PRESETS, WORKLOADS, get_workload, model_config
from .registry import build_model

# The monitor's attention selector (docs/CONTRACTS.md, spectral.ATTENTION_PATTERN), repeated here
# because workloads must not import spectral; tests check the two stay equal when both exist.
ATTENTION_PATTERN = r"(^|\.)(self_|cross_)?attn\.[qkvo]_proj\.weight$"


def parameter_names(workload: str, preset: str, model_overrides: dict | None = None,
                    task_overrides: dict | None = None) -> list[tuple[str, int]]:
    """(name, element count) of every parameter of a workload's model, in ``named_parameters``
    order — what a monitor selector is matched against. Built on the ``meta`` device."""
    cfg = model_config(workload, preset, task_overrides or {}, model_overrides or {})
    with torch.device("meta"):
        model = build_model(workload, cfg)
    return [(n, p.numel()) for n, p in model.named_parameters()]


def parameter_counts(workload: str, preset: str, model_overrides: dict | None = None,
                     task_overrides: dict | None = None) -> tuple[int, int]:
    """(all parameters, attention-projection weights) of a workload's model.

    Built on the ``meta`` device: shapes only, no memory, so GPT-2 costs nothing to count.
    """
    named = parameter_names(workload, preset, model_overrides, task_overrides)
    pat = re.compile(ATTENTION_PATTERN)
    return sum(n for _, n in named), sum(n for name, n in named if pat.search(name))


def _fmt_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def describe_table(presets=("paper", "laptop", "tiny")) -> str:
    """A plain-text table: workload, preset, parameters, attention parameters, default optimiser
    settings (AdamW; Muon shares lr/wd), the paper's eval interval and the typical step counts."""
    for p in presets:
        if p not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {p!r}")
    header = ("workload", "preset", "params", "attn params", "defaults (adamw)", "eval", "typical steps")
    rows = []
    for w in WORKLOADS:
        spec = get_workload(w)
        for p in presets:
            pr = spec.preset(p)
            total, attn = parameter_counts(w, p)
            opt = (f"lr {pr.lr:g} β {pr.betas[0]:g}/{pr.betas[1]:g} wd {pr.paper_weight_decay:g} "
                   f"bs {pr.batch_size} clip 1")
            rows.append((w, p, _fmt_count(total), _fmt_count(attn), opt, str(pr.eval_every), spec.typical_steps(p)))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(header), line(tuple("-" * wd for wd in widths))] + [line(r) for r in rows]
    out.append("")
    out.append("wd = the paper's weight decay for the workload (TrainConfig.weight_decay is explicit, default 1.0; "
               "grokking controls use 0). Muon: same lr/wd (match_rms_adamw scaling); SGD: lr 1e-2 "
               "(grokking tasks) / 1e-1 (LMs), untuned. LM presets use a byte-level tokenizer unless given a token "
               "file; the paper presets keep GPT-2's 50,257-row vocabulary.")
    return "\n".join(out)
