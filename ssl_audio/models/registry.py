"""The families: which config class, presets and model each name stands for (the one explicit table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from ssl_audio.configs import from_dict, to_dict
from ssl_audio.models import hubert, wav2vec2, wavlm


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which family, which preset, and overrides of the preset's fields (checked against the family's config)."""

    family: Literal["wav2vec2", "hubert", "wavlm"] = "wav2vec2"
    preset: str = "base"  # a preset function of the family: base, large, tiny (wavlm: base_plus too)
    config: dict[str, Any] = field(default_factory=dict)  # e.g. {masking: {mask_prob: 0.5}, num_classes: [100]}


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
