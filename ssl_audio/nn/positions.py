"""Whisper's sinusoidal position table, added to the transformer input (the trunk's other option is the
convolutional embedding in nn/transformer.py).

Formula (openai/whisper model.py `sinusoids`): channel pair i has inverse timescale 10000^(-i / (D/2 - 1)); the
first D/2 channels are the sines, the last D/2 the cosines. Computed in fp32 as Whisper does: at position 1500 an
angle's last bit is ~1e-4, so a float64 table would differ from Whisper's (and its checkpoints') by that much.
A derived buffer, not a parameter: state dicts do not
carry it (a transformers Whisper folder's embed_positions is checked against it on import).

Shapes: B batch, T frames, D model width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MAX_TIMESCALE = 10_000.0


def sinusoids(length: int, dim: int) -> Tensor:
    """(length, dim) table: row t = [sin(t * inv_0), ..., sin(t * inv_{D/2-1}), cos(t * inv_0), ...]."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal positions need an even width of at least 4, got {dim}")
    increment = math.log(MAX_TIMESCALE) / (dim // 2 - 1)
    inverse = torch.exp(-increment * torch.arange(dim // 2, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inverse[None, :]  # (T, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class SinusoidalPositions(nn.Module):
    """(B, T, D) input -> (1, T, D) rows 0..T-1 of the table, added by the caller (trimmed to the input)."""

    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoids(max_positions, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"{x.shape[1]} frames exceed the position table's {self.table.shape[0]}")
        return self.table[None, : x.shape[1]].to(x.dtype)
