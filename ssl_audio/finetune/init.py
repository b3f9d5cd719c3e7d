"""Fine-tuning starts from any step folder the project loads (its own families, converted fairseq / transformers /
torchaudio models): the trunk's architecture is the checkpoint's, its regularisation the fine-tuning config's."""

from __future__ import annotations

from typing import Any

from ssl_audio.configs import to_dict
from ssl_audio.models.loading import read_model_config
from ssl_audio.models.registry import FAMILIES, ModelConfig, family_config, lay_over

# Encoder fields that are training choices, not architecture: fine-tuning sets its own (fairseq overrides them too).
REGULARISATION = ("dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layerdrop")


def encoder_from_checkpoint(model: ModelConfig, checkpoint: str) -> dict[str, Any]:
    """The checkpoint's encoder config with the fine-tuning preset's regularisation and `model.config.encoder`
    laid over it."""
    pretrained = to_dict(family_config(read_model_config(checkpoint)).encoder)
    presets = FAMILIES[model.family].presets
    if model.preset not in presets:
        raise ValueError(f"config key 'model.preset': {model.family} has presets {sorted(presets)}")
    preset = to_dict(presets[model.preset]().encoder)
    regularisation = {k: preset[k] for k in REGULARISATION if k in preset}
    return lay_over(lay_over(pretrained, regularisation), model.config.get("encoder", {}))
