"""Whisper presets: the published dimensions, and the same parameters as transformers' WhisperEncoder of those
dimensions (built on the meta device: no memory). Ours has no stored position table (it is derived) and one
inert key bias per layer (models/whisper.py)."""

import dataclasses

import pytest
import torch
import transformers

from ssl_audio.models.encoder import Encoder
from ssl_audio.models.registry import ModelConfig, build_model, family_config

PUBLISHED = {  # openai/whisper model cards: width, layers, heads, mel bins
    "tiny": (384, 4, 6, 80),
    "base": (512, 6, 8, 80),
    "small": (768, 12, 12, 80),
    "medium": (1024, 24, 16, 80),
    "large_v3": (1280, 32, 20, 128),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_has_the_published_dimensions_and_transformers_parameters(name: str) -> None:
    dim, layers, heads, mels = PUBLISHED[name]
    enc = family_config(ModelConfig(family="whisper", preset=name)).encoder
    assert (enc.dim, enc.num_layers, enc.num_heads, enc.frontend.num_mels) == PUBLISHED[name]
    assert (enc.ffn_dim, enc.max_positions, enc.pre_ln, enc.positions) == (4 * dim, 1500, True, "sinusoidal")
    config = transformers.WhisperConfig(
        d_model=dim, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=4 * dim, num_mel_bins=mels
    )
    with torch.device("meta"):
        theirs = transformers.models.whisper.modeling_whisper.WhisperEncoder(config)
        ours = Encoder(enc)
    their_count = sum(p.numel() for p in theirs.parameters()) - 1500 * dim  # less the stored sinusoid table
    assert sum(p.numel() for p in ours.parameters()) == their_count + layers * dim  # plus the key biases


def test_waveform_models_keep_their_keys() -> None:
    """The new encoder options default to the waveform trunk: HuBERT BASE's keys are the conv stack's."""
    keys = build_model(ModelConfig(family="hubert", preset="tiny")).state_dict().keys()
    assert "encoder.transformer.positional.conv.parametrizations.weight.original0" in keys
    assert "encoder.projection.linear.weight" in keys and not any("stem" in k for k in keys)


def test_trimmed_clips_must_mask_the_batch_padding() -> None:
    enc = family_config(ModelConfig(family="whisper", preset="micro")).encoder
    with pytest.raises(ValueError, match="attend_padding"):
        dataclasses.replace(enc, frontend=dataclasses.replace(enc.frontend, clip="trim"))
