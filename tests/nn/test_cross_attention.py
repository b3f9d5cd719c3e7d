"""Cross-attention and the causal bias against torch.nn.MultiheadAttention with the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_audio.nn.attention import SelfAttention
from ssl_audio.nn.cross_attention import CrossAttention, causal_bias

DIM, HEADS = 8, 2


def reference_from(cross: CrossAttention, memory_dim: int) -> nn.MultiheadAttention:
    """torch's attention holding the same projections: q, then k and v (the two halves of key_value)."""
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True, kdim=memory_dim, vdim=memory_dim).double()
    key, value = cross.key_value.weight.chunk(2, dim=0)
    with torch.no_grad():
        mha.q_proj_weight.copy_(cross.query.weight)
        mha.k_proj_weight.copy_(key)
        mha.v_proj_weight.copy_(value)
        mha.in_proj_bias.copy_(torch.cat([cross.query.bias, cross.key_value.bias]))
        mha.out_proj.weight.copy_(cross.out.weight)
        mha.out_proj.bias.copy_(cross.out.bias)
    return mha


def test_cross_attention_matches_multihead_attention_with_padding() -> None:
    torch.manual_seed(0)
    cross = CrossAttention(DIM, HEADS, memory_dim=6).double()
    mha = reference_from(cross, 6)
    x = torch.randn(2, 3, DIM, dtype=torch.float64)
    memory = torch.randn(2, 5, 6, dtype=torch.float64)
    padding = torch.tensor([[False] * 5, [False, False, True, True, True]])
    expected, _ = mha(x, memory, memory, key_padding_mask=padding, need_weights=False)
    torch.testing.assert_close(cross(x, memory, padding), expected, rtol=0, atol=1e-12)


def test_causal_bias_matches_a_causal_multihead_attention() -> None:
    torch.manual_seed(1)
    attention = SelfAttention(DIM, HEADS).double()
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attention.qkv.weight)
        mha.in_proj_bias.copy_(attention.qkv.bias)
        mha.out_proj.weight.copy_(attention.out.weight)
        mha.out_proj.bias.copy_(attention.out.bias)
    x = torch.randn(2, 4, DIM, dtype=torch.float64)
    future = torch.ones(4, 4, dtype=torch.bool).triu(diagonal=1)
    expected, _ = mha(x, x, x, attn_mask=future, need_weights=False)
    bias = causal_bias(4, dtype=torch.float64)
    assert bias[0].isinf().tolist() == future.tolist()
    torch.testing.assert_close(attention(x, None, bias), expected, rtol=0, atol=1e-12)


def test_width_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="width 9 is not divisible by 2 heads"):
        CrossAttention(9, 2)
