"""Dyck-1 depth predictor: a causal pre-norm transformer that labels every prefix with its depth.

Input tokens: ``(`` = 0, ``)`` = 1, pad = 2. Output: the stack depth after each token, one of
``n_classes`` = 13 classes (depth 0..12, context 24 holds at most 12 open brackets).

Size note: the paper's prose says "~150K parameters", but the configuration its training script
uses (d 128, 2 layers, 4 heads, d_ff 256 — the same trunk as the modular-arithmetic model)
has 2 × 132,480 in the blocks alone; with context 24 the model has 270,349 parameters.
The attention set (2 × 4 × 128² = 131,072), which is what the monitor measures, matches the
paper. edgesweep follows the script (what produced the reported grokking), not the prose.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..configs import DyckConfig
from .layers import Block


class DyckTransformer(nn.Module):
    output_modules = ("head",)

    def __init__(self, cfg: DyckConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.ctx_len, cfg.d_model)
        self.layers = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) tokens → depth logits (B, T, n_classes)."""
        T = x.shape[1]
        h = self.tok_emb(x) + self.pos_emb(torch.arange(T, device=x.device))
        for layer in self.layers:
            h = layer(h, is_causal=True)
        return self.head(self.ln_f(h))
