"""How a batch enters a family, and the family's chance level and headline metric."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssl_audio.data.collate import Batch
from ssl_audio.models import wav2vec2
from ssl_audio.models.output import Output
from ssl_audio.models.registry import FAMILIES


def forward_batch(
    model: nn.Module, family: str, batch: Batch, *, step: int, layerdrop_seed: int | None = None, generator=None
) -> Output:
    """Run a batch through any family (through the DDP wrapper, so its hooks fire)."""
    if FAMILIES[family].uses_labels:
        if not batch.labels:
            raise ValueError(f"{family} needs frame labels: set data.train_labels / data.valid_labels")
        return model(
            batch.waves,
            batch.lengths,
            list(batch.labels),
            step=step,
            layerdrop_seed=layerdrop_seed,
            generator=generator,
        )
    return model(batch.waves, batch.lengths, step=step, layerdrop_seed=layerdrop_seed, generator=generator)


def chance_accuracy(family_cfg: Any) -> float:
    """Masked accuracy of guessing: 1 / (1 + K) for wav2vec 2.0, 1 / k for HuBERT's largest label set."""
    if isinstance(family_cfg, wav2vec2.Wav2Vec2Config):
        return 1.0 / (1 + family_cfg.num_negatives)
    return 1.0 / max(family_cfg.num_classes)


def masked_accuracy(metrics: dict[str, torch.Tensor]) -> float | None:
    """The family's headline accuracy metric, when present."""
    for key in ("accuracy", "accuracy_masked_0"):
        if key in metrics:
            return float(metrics[key])
    return None
