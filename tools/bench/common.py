"""What every builder takes (the batch) and returns (model, loss, untimed preparation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.models.encoder import EncoderConfig

Prepare = Callable[[int], object]  # step -> inputs drawn outside the timed region (masks, negatives)
LossFn = Callable[[int, object], Tensor]  # (step, prepared) -> scalar loss to backprop
C = TypeVar("C")


class Built(NamedTuple):
    model: nn.Module
    loss: LossFn
    prepare: Prepare | None


@dataclass(frozen=True, kw_only=True)
class Batch:
    wave: Tensor  # (B, S) float32
    lengths: Tensor | None  # (B,) samples, or None (no padding masks anywhere)
    labels: Tensor  # (B, T) long HuBERT labels, one per frame
    frames: int  # T

    @property
    def audio_seconds(self) -> float:
        return self.wave.numel() / SAMPLE_RATE


def make_batch(
    encoder: EncoderConfig, *, batch: int, samples: int, num_classes: int, with_lengths: bool = True, seed: int = 0
) -> Batch:
    """Random full-length waveforms and one random label per frame of `encoder`'s extractor."""
    generator = torch.Generator().manual_seed(seed)
    wave = 0.1 * torch.randn(batch, samples, generator=generator)
    lengths = torch.full((batch,), samples, dtype=torch.long) if with_lengths else None
    frames = frame_count(encoder, samples)
    labels = torch.randint(0, num_classes, (batch, frames), generator=generator)
    return Batch(wave=wave, lengths=lengths, labels=labels, frames=frames)


def frame_count(encoder: EncoderConfig, samples: int) -> int:
    """Frames `encoder`'s front-end makes of `samples` samples."""
    return encoder.frontend.flops(samples)[1]


def no_layerdrop(cfg: C) -> C:
    """A family config (with `.encoder`) or an EncoderConfig whose every step runs all layers."""
    if isinstance(cfg, EncoderConfig):
        return replace(cfg, layerdrop=0.0)
    return replace(cfg, encoder=replace(cfg.encoder, layerdrop=0.0))  # type: ignore[type-var]
