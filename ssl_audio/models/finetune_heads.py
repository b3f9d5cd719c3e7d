"""Fine-tuning heads on top of the encoder: per-frame CTC logits, pooled utterance logits.

Shapes: B batch, T frames, D model width, V vocabulary (CTC) or classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NEG_INF = -1e4  # fp16-safe score for padded frames before a softmax


class CTCHead(nn.Module):
    """Dropout + Linear D -> V (fairseq's `w2v_encoder.proj`, transformers' `lm_head`), at state key `head.proj`."""

    def __init__(self, dim: int, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, V)
        return self.proj(self.dropout(x))


def mean_pool(x: Tensor, padding_mask: Tensor | None) -> Tensor:
    """(B, T, D) -> (B, D): mean over the valid frames of each row."""
    if padding_mask is None:
        return x.mean(dim=1)
    valid = (~padding_mask).to(x.dtype)[..., None]  # (B, T, 1)
    return (x * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)


class AttentivePool(nn.Module):
    """One learned score per frame, softmax over the valid frames, weighted mean (self-attentive pooling)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:  # (B, T, D) -> (B, D)
        scores = self.score(x).squeeze(-1)  # (B, T)
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask, NEG_INF)
        weights = torch.softmax(scores.float(), dim=1).to(x.dtype)  # (B, T)
        return torch.einsum("bt,btd->bd", weights, x)


class ClassifyHead(nn.Module):
    """Pool the frames (mean or attentive), dropout, Linear D -> classes at `head.proj`."""

    def __init__(self, dim: int, num_classes: int, *, pooling: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = AttentivePool(dim) if pooling == "attentive" else None
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:  # (B, T, D) -> (B, classes)
        pooled = mean_pool(x, padding_mask) if self.attention is None else self.attention(x, padding_mask)
        return self.proj(self.dropout(pooled))
