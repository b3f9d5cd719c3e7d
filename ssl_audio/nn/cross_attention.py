"""Multi-head cross-attention through scaled_dot_product_attention: decoder positions attend to an encoder
memory, skipping its padded frames. Also the causal mask a decoder's self-attention uses.

Shapes: B batch, U decoder positions, T memory frames, D decoder width, M memory width, H heads, E = D / H.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


def causal_bias(length: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(1, U, U) additive bias: 0 where key <= query, -inf after it (a position sees only itself and the past).

    One head of bias broadcasts over all heads in `SelfAttention`'s position_bias argument.
    """
    future = torch.ones(length, length, dtype=torch.bool, device=device).triu(diagonal=1)
    return torch.zeros(1, length, length, dtype=dtype, device=device).masked_fill(future, float("-inf"))


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the memory (its own width M), output projection."""

    def __init__(self, dim: int, num_heads: int, *, memory_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim if memory_dim is None else memory_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, memory: Tensor) -> Tensor:
        """(B, T, M) memory -> (2, B, H, T, E) keys and values; computed once per utterance when decoding."""
        return rearrange(self.key_value(memory), "b t (two h e) -> two b h t e", two=2, h=self.num_heads)

    def forward(
        self, x: Tensor, memory: Tensor, memory_padding: Tensor | None = None, keys_values: Tensor | None = None
    ) -> Tensor:
        """x (B, U, D); memory (B, T, M); memory_padding (B, T) True at padded frames; keys_values: this
        memory's `keys_values`, if already computed -> (B, U, D)."""
        q = rearrange(self.query(x), "b u (h e) -> b h u e", h=self.num_heads)
        k, v = self.keys_values(memory) if keys_values is None else keys_values
        mask = None if memory_padding is None else ~memory_padding[:, None, None, :]  # (B, 1, 1, T): True = attend
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, U, E)
        return self.out(rearrange(y, "b h u e -> b u (h e)"))
