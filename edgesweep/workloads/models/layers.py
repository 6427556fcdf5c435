"""Transformer building blocks shared by every model family.

Naming convention (docs/CONTRACTS.md): each attention block owns four separate ``nn.Linear``
projections ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and lives in an attribute named
``attn`` (encoder / decoder-only blocks) or ``self_attn`` / ``cross_attn`` (decoder blocks of
the encoder–decoder). The spectral monitor selects the attention parameter set with the regex
``(^|\\.)(self_|cross_)?attn\\.[qkvo]_proj\\.weight$``, so renaming anything here silently
changes what the monitor measures. No fused ``in_proj``: a fused matrix would still be found by
name only if it were called ``*_proj``, and would mix Q/K/V rows in one tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    """Multi-head attention with separate Q/K/V/O projections and ``F.scaled_dot_product_attention``.

    ``init="torch"`` reproduces ``nn.MultiheadAttention``'s initialisation (the modules the
    paper's grokking scripts used): Q, K, V weights Xavier-uniform *as one fused (3d × d)
    matrix* (bound sqrt(6 / (d + 3d))), output projection PyTorch's default Linear init, all
    biases zero. ``init="gpt"`` leaves initialisation to the owning model (nanoGPT style).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, init: str = "torch"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        if init == "torch":
            bound = math.sqrt(6.0 / (d_model + 3 * d_model))
            for lin in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.uniform_(lin.weight, -bound, bound)
            for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def forward(
        self,
        x: torch.Tensor,
        kv: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """x (B, T, d) queries; kv (B, S, d) keys/values (defaults to x).

        attn_mask: boolean, True = may attend, broadcastable to (B, heads, T, S).
        """
        kv = x if kv is None else kv
        B, T, d = x.shape
        S = kv.shape[1]
        h = self.n_heads
        q = self.q_proj(x).view(B, T, h, d // h).transpose(1, 2)
        k = self.k_proj(kv).view(B, S, h, d // h).transpose(1, 2)
        v = self.v_proj(kv).view(B, S, h, d // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear → GELU (exact, as nn.TransformerEncoderLayer) → Linear."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = True):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, bias: bool = True, init: str = "torch"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, bias=bias, init=init)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, bias=bias)

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal)
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(nn.Module):
    """Pre-norm encoder–decoder decoder block: causal self-attention, cross-attention, MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, n_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, n_heads)
        self.ln_3 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff)

    def forward(self, x, memory, memory_mask=None):
        x = x + self.self_attn(self.ln_1(x), is_causal=True)
        x = x + self.cross_attn(self.ln_2(x), kv=memory, attn_mask=memory_mask)
        return x + self.mlp(self.ln_3(x))


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())
