"""Modular-arithmetic transformer (single task and multitask).

The paper's model: a 2-layer pre-norm transformer encoder (d 128, 4 heads, d_ff 256, GELU, no
dropout) reads the two tokens (a, b), and a LayerNorm + linear head on the *position-0* output
predicts the answer mod p. Multitask runs share the trunk and put one linear head per task on
the same read-out vector. With p = 97: 290,401 parameters (one head), +12,513 per extra head;
attention weights 2 × 4 × 128² = 131,072.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..configs import ModArithConfig
from .layers import Block


class ModArithTransformer(nn.Module):
    # Modules whose 2-D weights are outputs, not hidden matrices (Muon leaves them to AdamW).
    output_modules = ("heads",)

    def __init__(self, cfg: ModArithConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.p, cfg.d_model)
        # A learned (2, d) position table with N(0, 1/d) entries, as in the paper's scripts.
        self.pos_emb = nn.Parameter(torch.randn(2, cfg.d_model) / math.sqrt(cfg.d_model))
        self.layers = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.heads = nn.ModuleList(nn.Linear(cfg.d_model, cfg.p) for _ in range(cfg.n_tasks))

    def forward(self, ab: torch.Tensor) -> torch.Tensor:
        """ab (B, 2) int64 residues → logits (B, n_tasks, p)."""
        h = self.tok_emb(ab) + self.pos_emb
        for layer in self.layers:
            h = layer(h)
        z = self.ln_f(h[:, 0])
        return torch.stack([head(z) for head in self.heads], dim=1)
