"""GPT-style decoder-only language model (nanoGPT layout) for the TinyStories-51M and GPT-2-124M runs.

Token + learned position embeddings, ``n_layers`` pre-norm blocks (causal attention with
separate q/k/v/o projections, GELU MLP of width d_ff), final LayerNorm, LM head tied to the token
embedding. Initialisation as GPT-2: N(0, 0.02), residual output projections N(0, 0.02/√(2L)),
zero biases.

Sizes with the GPT-2 BPE vocabulary (50,257): 12 layers / d 768 / ctx 1024 → 124,439,808
parameters (GPT-2 small); 8 layers / d 512 / d_ff 2048 / ctx 256 → 51,082,752 (the TinyStories
model). With edgesweep's byte-level tokenizer only 256 of the vocabulary rows are ever used;
the paper preset keeps the BPE-sized table so that memory, step time and the "all parameters"
vector length P match the paper. Pass a token file (GPT-2 BPE ids) to use the whole table.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..configs import GPTConfig
from .layers import Block


class GPT(nn.Module):
    output_modules = ("lm_head",)

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.ctx_len, cfg.d_model)
        self.layers = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.d_ff, bias=cfg.bias, init="gpt")
            for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # Residual-stream outputs get a depth-scaled init (GPT-2 paper, nanoGPT).
        for name, p in self.named_parameters():
            if name.endswith("attn.o_proj.weight") or name.endswith("mlp.fc_out.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids, T ≤ ctx_len → next-token logits (B, T, vocab_size)."""
        T = idx.shape[1]
        if T > self.cfg.ctx_len:
            raise ValueError(f"sequence length {T} exceeds ctx_len {self.cfg.ctx_len}")
        h = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for layer in self.layers:
            h = layer(h, is_causal=True)
        return self.lm_head(self.ln_f(h))
