"""Multi-head self-attention through scaled_dot_product_attention, with WavLM's gated relative
position bias as an option.

Shapes: B batch, T frames, D model width, H heads, E = D / H head width.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


class RelativePositionBias(nn.Module):
    """Bucketed relative position bias (T5 / WavLM): one learned scalar per (bucket, head).

    Half the buckets hold keys after the query, half keys before. Within each half, the first quarter of
    the buckets are exact distances; the rest cover distances up to `max_distance` logarithmically.
    """

    def __init__(self, num_heads: int, num_buckets: int = 320, max_distance: int = 800) -> None:
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, length: int, device: torch.device | None = None) -> Tensor:
        """(T, T) bucket index of key j relative to query i."""
        positions = torch.arange(length, device=device)
        offset = positions[None, :] - positions[:, None]  # (T, T): key - query
        half = self.num_buckets // 2
        exact = half // 2
        distance = offset.abs()
        # log-spaced buckets for exact <= distance < max_distance, saturating at the last bucket
        far = (
            exact
            + (
                torch.log(distance.float().clamp(min=1) / exact) / math.log(self.max_distance / exact) * (half - exact)
            ).long()
        )
        far = far.clamp(max=half - 1)
        return torch.where(distance < exact, distance, far) + (offset > 0).long() * half

    def forward(self, length: int) -> Tensor:
        """(H, T, T) bias shared by every layer."""
        values = self.embedding(self.buckets(length, self.embedding.weight.device))  # (T, T, H)
        return rearrange(values, "q k h -> h q k")


class SelfAttention(nn.Module):
    """Fused QKV projection, SDPA, output projection.

    With `gated_bias`, each layer scales the shared relative position bias by a gate computed from its
    own input (WavLM): gate = a * (b * c - 1) + 2 with a, b = sigmoid(per-head linear of the input).
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, gated_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim // num_heads, 8) if gated_bias else None
        self.gate_scale = nn.Parameter(torch.ones(1, num_heads, 1, 1)) if gated_bias else None

    def gated(self, x: Tensor, bias: Tensor) -> Tensor:
        """(B, T, D) input and (H, T, T) bias -> (B, H, T, T) gated bias."""
        assert self.gate is not None and self.gate_scale is not None
        heads = rearrange(x, "b t (h e) -> b h t e", h=self.num_heads)
        a, b = torch.sigmoid(rearrange(self.gate(heads), "b h t (two four) -> b h t two four", two=2).sum(-1)).chunk(
            2, dim=-1
        )  # each (B, H, T, 1)
        return (a * (b * self.gate_scale - 1.0) + 2.0) * bias

    def forward(self, x: Tensor, key_padding: Tensor | None = None, position_bias: Tensor | None = None) -> Tensor:
        """x (B, T, D); key_padding (B, T) True at padded keys; position_bias (H, T, T) or None."""
        q, k, v = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.num_heads)
        mask: Tensor | None = None
        if position_bias is not None:
            mask = self.gated(x, position_bias) if self.gate is not None else position_bias[None]
            mask = mask.to(q.dtype)
            if key_padding is not None:  # a float bias carries the padding as -inf
                mask = mask.masked_fill(key_padding[:, None, None, :], float("-inf"))
        elif key_padding is not None:
            mask = ~key_padding[:, None, None, :]  # (B, 1, 1, T): True = attend
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, E)
        return self.out(rearrange(y, "b h t e -> b t (h e)"))
