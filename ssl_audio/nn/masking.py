"""Span masking for masked prediction (wav2vec 2.0, HuBERT, WavLM): which frames and channels to hide.

Shapes: B batch, T frames, C/D channels, K span starts per row.

Semantics follow fairseq's `compute_mask_indices` with static span lengths, sampled for the whole batch at
once on the input's device (no python loop over rows or spans):

- a row of `length` valid frames gets K = max(min_masks, floor(mask_prob * length / mask_length + u)) spans,
  u ~ U[0, 1) per row (probabilistic rounding), K capped by how many spans fit in the row;
- span starts are distinct and uniform, and every span lies inside [0, length): padding is never masked;
- by default spans may overlap, so the masked fraction is below mask_prob (about 0.49 for 0.65 / 10);
- `no_overlap=True` keeps spans apart by at least `min_space` unmasked frames. K starts are drawn uniformly
  over all such placements with the "stars and bars" trick: choose K distinct slots among
  length - (mask_length - 1) - (K - 1) * (mask_length - 1 + min_space), sort them, and move the i-th slot
  right by i * (mask_length - 1 + min_space). With min_space 0 spans may touch, so a masked run can be a
  multiple of mask_length long; with min_space >= 1 every run is exactly one span;
- `require_same_masks=True` (wav2vec 2.0) unmasks random frames so every row has the row minimum count.

Rows shorter than `mask_length` get spans clipped to the row (so a 0 < length < mask_length row is fully
masked); the data pipeline should drop such utterances. Starts may be the last possible one
(length - mask_length); fairseq stops one frame earlier, which changes the statistics negligibly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssl_audio.checks import require_count, require_probability

_SORT_LAST = 2.0  # random sort key above any U[0, 1) draw: pushes excluded positions to the end of a row


@dataclass(frozen=True, kw_only=True)
class MaskingConfig:
    """Time and channel masking of the (B, T, D) features that enter the transformer."""

    mask_prob: float = 0.65  # span starts per frame x span length; wav2vec 2.0 BASE 0.65, HuBERT BASE 0.80
    mask_length: int = 10  # frames per span (200 ms at 50 Hz); wav2vec 2.0 and HuBERT BASE: 10
    min_masks: int = 2  # at least this many spans per row; wav2vec 2.0 and HuBERT: 2
    no_overlap: bool = False  # fairseq no_mask_overlap; False in every published recipe
    min_space: int = 0  # unmasked frames between spans, only with no_overlap; fairseq mask_min_space: 0
    # Equal masked count per row (fairseq wav2vec 2.0 and HuBERT: True, because their negative sampler needs a
    # rectangular batch). Our losses handle ragged rows, and in a padded batch the option would cap every row
    # at the shortest row's count, so it is off by default.
    require_same_masks: bool = False
    channel_prob: float = 0.0  # channel masking; fairseq mask_channel_prob 0 in pretraining (fine-tuning: ~0.5)
    channel_length: int = 10  # channels per channel span; fairseq mask_channel_length: 10

    def __post_init__(self) -> None:
        require_probability(self, "mask_prob", "channel_prob")
        require_count(self, "mask_length", "channel_length")
        require_count(self, "min_masks", "min_space", minimum=0)


def compute_span_mask(
    shape: tuple[int, int],
    *,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    lengths: Tensor | None = None,
    no_overlap: bool = False,
    min_space: int = 0,
    require_same_masks: bool = False,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A (B, T) bool mask of random spans, True = masked; see the module docstring for the sampling.

    `lengths` (B,) counts the valid frames of each row (the rest is padding, never masked); None means T.
    `device` defaults to that of `lengths`; `generator` (on that device) makes the draw reproducible.
    """
    batch, frames = shape
    if batch < 0 or frames < 0:
        raise ValueError(f"mask shape must be (B, T) with B, T >= 0, got {shape}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if mask_length < 1 or min_masks < 0 or min_space < 0:
        raise ValueError(
            f"need mask_length >= 1, min_masks >= 0, min_space >= 0; got {mask_length}, {min_masks}, {min_space}"
        )
    if lengths is None:
        num_valid = torch.full((batch,), frames, dtype=torch.long, device=device)
    else:
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},) for mask shape {shape}, got {tuple(lengths.shape)}")
        num_valid = lengths.to(device=device or lengths.device, dtype=torch.long)
        if batch and (num_valid.min() < 0 or num_valid.max() > frames):
            raise ValueError(f"lengths must lie in [0, {frames}], got {lengths.tolist()}")
    device = num_valid.device
    pos = torch.arange(frames, device=device)  # (T,)

    span = num_valid.clamp(max=mask_length, min=1)  # (B,) a row shorter than a span gets a clipped span
    # gap: how much farther apart consecutive starts are than distinct slots (0: overlap allowed)
    gap = span - 1 + min_space if no_overlap else torch.zeros_like(span)  # (B,)
    noise = torch.rand(batch, generator=generator, device=device)  # probabilistic rounding
    num_spans = (mask_prob * num_valid / mask_length + noise).floor().long().clamp(min=min_masks)  # (B,)
    max_spans = (num_valid - span + 1 + gap) // (1 + gap)  # (B,) most spans that fit in the row
    num_spans = torch.minimum(num_spans, max_spans).masked_fill(num_valid == 0, 0)
    num_slots = num_valid - span + 1 - (num_spans - 1).clamp(min=0) * gap  # (B,) >= num_spans
    chosen = pos < num_spans[:, None]  # (B, T) the first K columns of a row hold its K starts

    # K distinct slots per row: random keys, slots outside the row sorted last, keep the K smallest keys
    keys = torch.rand(batch, frames, generator=generator, device=device)
    keys = keys.masked_fill(pos >= num_slots[:, None], _SORT_LAST)
    slots = torch.where(chosen, keys.argsort(dim=1), frames).sort(dim=1).values  # (B, T) ascending, sentinel T
    starts = torch.where(chosen, slots + pos * gap[:, None], frames)  # (B, T) i-th start moves right by i gaps
    is_start = torch.zeros(batch, frames + 1, dtype=torch.long, device=device)
    is_start = is_start.scatter_(1, starts, 1)[:, :frames]  # (B, T); the sentinel column T is dropped

    # frame t is masked iff a span starts in (t - span, t]: a difference of running start counts
    started = is_start.cumsum(dim=1)  # (B, T)
    started_before = nn.functional.pad(started, (mask_length, 0))  # (B, mask_length + T), column j = t + L
    started_before = started_before.gather(1, pos + mask_length - span[:, None])  # (B, T) count up to t - span
    mask = started > started_before

    if require_same_masks and batch > 1:
        mask = _keep_random(mask, mask.sum(dim=1).min(), generator=generator)
    return mask


def _keep_random(mask: Tensor, count: Tensor, *, generator: torch.Generator | None) -> Tensor:
    """Keep `count` random True entries of each row of a (B, T) bool mask (each row has at least that many)."""
    batch, frames = mask.shape
    keys = torch.rand(batch, frames, generator=generator, device=mask.device).masked_fill(~mask, _SORT_LAST)
    keep = torch.arange(frames, device=mask.device) < count  # (T,) the first `count` in key order
    return torch.zeros_like(mask).scatter_(1, keys.argsort(dim=1), keep.expand(batch, frames))


def compute_channel_mask(
    shape: tuple[int, int],
    *,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    no_overlap: bool = False,
    min_space: int = 0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A (B, C) bool mask of channel spans, True = zeroed in every frame of that row (fairseq mask_channel_*)."""
    return compute_span_mask(
        shape,
        mask_prob=mask_prob,
        mask_length=mask_length,
        min_masks=min_masks,
        no_overlap=no_overlap,
        min_space=min_space,
        device=device,
        generator=generator,
    )


def apply_mask(x: Tensor, mask: Tensor, mask_embedding: Tensor) -> Tensor:
    """Replace the masked frames of x (B, T, D) by `mask_embedding` (D,); returns a new tensor of x's dtype."""
    if x.ndim != 3:
        raise ValueError(f"x must be (B, T, D), got shape {tuple(x.shape)}")
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be bool of shape {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    if mask_embedding.shape != x.shape[-1:]:
        raise ValueError(f"mask_embedding must have shape ({x.shape[-1]},), got {tuple(mask_embedding.shape)}")
    # cast: under autocast x may be bf16 while the parameter stays fp32
    return torch.where(mask[..., None], mask_embedding.to(x.dtype), x)


class SpanMasker(nn.Module):
    """Time spans -> a learned embedding, channel spans -> 0 (in that order, as fairseq and torchaudio).

    Always masks when called: whether to mask (pretraining) or not (inference) is the model's choice.
    """

    def __init__(self, dim: int, config: MaskingConfig) -> None:
        super().__init__()
        self.config = config
        self.mask_embedding = nn.Parameter(torch.empty(dim).uniform_())  # fairseq: uniform [0, 1)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, D), lengths (B,) valid frames -> (masked x (B, T, D), time mask (B, T) True = masked)."""
        if x.ndim != 3 or x.shape[-1] != self.mask_embedding.shape[0]:
            raise ValueError(f"x must be (B, T, {self.mask_embedding.shape[0]}), got shape {tuple(x.shape)}")
        cfg = self.config
        batch, frames, dim = x.shape
        mask = compute_span_mask(
            (batch, frames),
            mask_prob=cfg.mask_prob,
            mask_length=cfg.mask_length,
            min_masks=cfg.min_masks,
            lengths=lengths,
            no_overlap=cfg.no_overlap,
            min_space=cfg.min_space,
            require_same_masks=cfg.require_same_masks,
            device=x.device,
            generator=generator,
        )
        x = apply_mask(x, mask, self.mask_embedding)
        if cfg.channel_prob > 0.0:
            channels = compute_channel_mask(
                (batch, dim),
                mask_prob=cfg.channel_prob,
                mask_length=cfg.channel_length,
                device=x.device,
                generator=generator,
            )
            x = x.masked_fill(channels[:, None, :], 0.0)  # (B, 1, D): the same channels in every frame
        return x, mask
