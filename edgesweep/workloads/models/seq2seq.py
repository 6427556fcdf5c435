"""Encoder–decoder transformer for SCAN (command → action sequence).

Pre-norm, 3 encoder + 3 decoder layers, d 256, 4 heads, d_ff 512, GELU, learned positions,
final LayerNorm on each stack, linear read-out over the action vocabulary: the configuration of
the paper's SCAN script (built there from ``nn.Transformer``). Encoder blocks name their
attention ``attn``; decoder blocks ``self_attn`` and ``cross_attn`` (docs/CONTRACTS.md).
Attention weights: 3 × 4 × 256² + 3 × 8 × 256² = 2,359,296.

Size note: the paper's prose says "~1.5M parameters", which cannot hold for this configuration
— its attention weights alone are 2.36M. This configuration has 3,978,249 parameters;
edgesweep follows the script.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..configs import Seq2SeqConfig
from .layers import Block, DecoderBlock


class Encoder(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.src_vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_src_len, cfg.d_model)
        self.layers = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(cfg.n_enc_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, src, key_mask):
        S = src.shape[1]
        h = self.tok_emb(src) + self.pos_emb(torch.arange(S, device=src.device))
        for layer in self.layers:
            h = layer(h, attn_mask=key_mask)
        return self.ln_f(h)


class Decoder(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_tgt_len, cfg.d_model)
        self.layers = nn.ModuleList(
            DecoderBlock(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(cfg.n_dec_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, tgt_in, memory, memory_mask):
        T = tgt_in.shape[1]
        h = self.tok_emb(tgt_in) + self.pos_emb(torch.arange(T, device=tgt_in.device))
        for layer in self.layers:
            h = layer(h, memory, memory_mask=memory_mask)
        return self.ln_f(h)


class Seq2SeqTransformer(nn.Module):
    output_modules = ("head",)

    def __init__(self, cfg: Seq2SeqConfig, pad_id: int = 0):
        super().__init__()
        self.cfg = cfg
        self.pad_id = pad_id
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S) command ids, tgt_in (B, T) ``<sos>``-shifted actions → logits (B, T, V).

        Padding keys of the source are masked for encoder self-attention and cross-attention.
        Target padding needs no mask: it only follows ``<eos>``, so the causal mask already
        hides it from every position whose prediction is scored.
        """
        key_mask = (src != self.pad_id)[:, None, None, :]  # (B, 1, 1, S), True = attend
        memory = self.encoder(src, key_mask)
        return self.head(self.decoder(tgt_in, memory, key_mask))
