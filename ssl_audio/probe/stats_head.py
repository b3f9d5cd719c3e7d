"""A speaker head in the style of SUPERB's SID / ASV heads: standardise each layer, mix the layers frame by frame
with learned softmax weights, pool the mixed frames into their mean and standard deviation (statistics pooling,
padding ignored), one linear layer.

It differs from the default utterance head (ssl_audio.probe.tasks.training.pooled_classifier), which pools each
layer first and mixes the pooled vectors: the std of a mix of layers is not the mix of their stds, and speaker
traits spread over several layers show up only in the former.

Shapes: B batch, T frames, K layers, D feature dimension, C classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_audio.probe.heads import LayerMix

VAR_FLOOR = 1e-6  # variance floor before the square root: its gradient at 0 is infinite (standardised inputs ~1)


def masked_mean_std(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, D) frames, (B,) valid counts -> (B, 2D): mean and population std over each row's valid frames."""
    if x.ndim != 3 or lengths.shape != x.shape[:1]:
        raise ValueError(
            f"masked_mean_std: frames (B, T, D) and lengths (B,), got {tuple(x.shape)}, {tuple(lengths.shape)}"
        )
    if bool((lengths < 1).any()) or int(lengths.max()) > x.shape[1]:
        raise ValueError(f"masked_mean_std: lengths must lie in 1..{x.shape[1]}, got {lengths.tolist()}")
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
    count = lengths.to(x.dtype)[:, None]  # (B, 1)
    mean = (x * valid).sum(dim=1) / count
    var = (((x - mean[:, None]) * valid) ** 2).sum(dim=1) / count  # two passes: no cancellation
    return torch.cat([mean, var.clamp(min=VAR_FLOOR).sqrt()], dim=-1)


class StatsPoolHead(nn.Module):
    """(B, T, K, D) frames + (B,) lengths -> (B, C): standardise, mix layers per frame, mean + std pooling, linear."""

    def __init__(self, mean: Tensor, std: Tensor, num_outputs: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)  # (K, D): training-frame statistics per layer
        self.register_buffer("std", std)  # (K, D)
        self.mix = LayerMix(mean.shape[0])
        self.linear = nn.Linear(2 * mean.shape[1], num_outputs)

    def pooled(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, K, D) -> (B, 2D): the statistics the linear layer sees (the verification embedding)."""
        return masked_mean_std(self.mix((x - self.mean) / self.std), lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.linear(self.pooled(x, lengths))
