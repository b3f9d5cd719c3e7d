"""The families: which config class, presets and model each name stands for (the one explicit table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which family, which preset, and overrides of the preset's fields (checked against the family's config)."""

    family: Literal["wav2vec2", "hubert", "wavlm"] = "wav2vec2"
    preset: str = "base"  # a preset function of the family: base, large, tiny (wavlm: base_plus too)
    config: dict[str, Any] = field(default_factory=dict)  # e.g. {masking: {mask_prob: 0.5}, num_classes: [100]}
