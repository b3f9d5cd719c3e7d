"""Patch masking for MAE-style objectives on the patch front-end's (B, T, F) token grid.

"random": each utterance masks exactly round(ratio * valid tokens) of its valid tokens, uniformly.
"time": each utterance masks whole time steps (every band), in non-overlapping spans of `span` steps placed
uniformly at random: exactly round(ratio * valid steps / span) spans (fewer when they would not fit).
Padded steps are never masked. True marks a masked token; mask.flatten(1) is in the tokens' time-major order.

Shapes: B batch, T time steps, F bands.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PatchMaskMode = Literal["random", "time"]


def mask_patches(
    steps: Tensor,
    num_steps: int,
    num_bands: int,
    *,
    ratio: float,
    mode: PatchMaskMode = "random",
    span: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B,) valid time steps -> (B, num_steps, num_bands) bool mask."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if span < 1:
        raise ValueError(f"mask span must be >= 1, got {span}")
    if mode == "random":
        return _random(steps, num_steps, num_bands, ratio, generator)
    if mode == "time":
        return _time_spans(steps, num_steps, num_bands, ratio, span, generator)
    raise ValueError(f"patch mask mode must be 'random' or 'time', got {mode!r}")


def _random(steps: Tensor, num_steps: int, num_bands: int, ratio: float, generator: torch.Generator | None) -> Tensor:
    batch = steps.shape[0]
    valid = (torch.arange(num_steps)[None, :] < steps.cpu()[:, None])[..., None].expand(batch, num_steps, num_bands)
    scores = torch.rand(batch, num_steps * num_bands, generator=generator)
    scores = scores.masked_fill(~valid.flatten(1), 2.0)  # padded tokens rank last
    ranks = scores.argsort(dim=1).argsort(dim=1)
    wanted = torch.round(ratio * steps.cpu().clamp(max=num_steps) * num_bands).long()
    return (ranks < wanted[:, None]).view(batch, num_steps, num_bands).to(steps.device)


def _time_spans(
    steps: Tensor, num_steps: int, num_bands: int, ratio: float, span: int, generator: torch.Generator | None
) -> Tensor:
    mask = torch.zeros(steps.shape[0], num_steps, dtype=torch.bool)
    for row, length in enumerate(steps.cpu().clamp(max=num_steps).tolist()):
        count = min(round(ratio * length / span), length // span)
        if count == 0:
            continue
        # k non-overlapping spans in L steps <-> k distinct slots among L - k (span - 1) (stars and bars)
        slots = torch.randperm(length - count * (span - 1), generator=generator)[:count].sort().values
        for i, slot in enumerate(slots.tolist()):
            start = slot + i * (span - 1)
            mask[row, start : start + span] = True
    return mask[..., None].expand(-1, -1, num_bands).clone().to(steps.device)
