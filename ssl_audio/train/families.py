"""The one explicit table of families: config class, presets, model class, and how a batch enters it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_audio.configs import to_dict
from ssl_audio.data.collate import Batch
from ssl_audio.models import hubert, wav2vec2, wavlm
from ssl_audio.models.output import Output
from ssl_audio.models.registry import ModelConfig
from ssl_audio.train.config import from_dict


@dataclass(frozen=True)
class Family:
    config_class: type
    presets: dict[str, Callable[[], Any]]
    model_class: type[nn.Module]
    uses_labels: bool


FAMILIES: dict[str, Family] = {
    "wav2vec2": Family(
        wav2vec2.Wav2Vec2Config,
        {"base": wav2vec2.wav2vec2_base, "large": wav2vec2.wav2vec2_large, "tiny": wav2vec2.wav2vec2_tiny},
        wav2vec2.Wav2Vec2,
        uses_labels=False,
    ),
    "hubert": Family(
        hubert.HubertConfig,
        {"base": hubert.hubert_base, "large": hubert.hubert_large, "tiny": hubert.hubert_tiny},
        hubert.Hubert,
        uses_labels=True,
    ),
    "wavlm": Family(
        hubert.HubertConfig,
        {
            "base": wavlm.wavlm_base,
            "base_plus": wavlm.wavlm_base_plus,
            "large": wavlm.wavlm_large,
            "tiny": wavlm.wavlm_tiny,
        },
        wavlm.WavLM,
        uses_labels=True,
    ),
}


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def family_config(model: ModelConfig) -> Any:
    """The family's config: the preset's values with `model.config` laid over them (keys checked)."""
    family = FAMILIES[model.family]
    if model.preset not in family.presets:
        raise ValueError(f"config key 'model.preset': {model.family} has presets {sorted(family.presets)}")
    base = to_dict(family.presets[model.preset]())
    try:
        return from_dict(_merge(base, model.config), schema=family.config_class)
    except ValueError as err:
        raise ValueError(str(err).replace("config key '", "config key 'model.config.")) from None


def build_model(model: ModelConfig) -> nn.Module:
    return FAMILIES[model.family].model_class(family_config(model))


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
