"""Whisper's encoder on the trunk, and the family that pretrains it with HuBERT's objective.

The encoder (openai/whisper model.py AudioEncoder) is the trunk with: Whisper's front-end (log-mel + conv stem,
nn/whisper_frontend.py), no feature projection (the stem is the model width), sinusoidal positions, pre-LN layers
with a GELU MLP of 4 x width, a final LayerNorm, no dropout. Its k_proj has no bias: our fused qkv keeps a key
bias, which cannot change attention (it adds q . b to every logit of a query, which softmax ignores) and gets no
gradient; it is imported as zeros and dropped on export.

The family is HuBERT's (models/hubert.py) on this encoder: continued pretraining of an imported Whisper
encoder with labels from its own layer (`ssl-audio hubert-iterate`); its label heads start fresh on import.

Presets (the published dimensions, width / layers / heads): tiny 384/4/6, base 512/6/8, small 768/12/12,
medium 1024/24/16, large-v3 1280/32/20 with 128 mel bins; micro is tiny shrunk for tests.
"""

from __future__ import annotations

from dataclasses import replace

from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.hubert import HubertConfig
from ssl_audio.nn.whisper_frontend import CLIP_SAMPLES, ClipMode, WhisperFrontendConfig

# name -> (width, layers, heads, mel bins)
DIMENSIONS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (384, 4, 6, 80),
    "base": (512, 6, 8, 80),
    "small": (768, 12, 12, 80),
    "medium": (1024, 24, 16, 80),
    "large_v3": (1280, 32, 20, 128),
}


def whisper_encoder(
    dim: int,
    num_layers: int,
    num_heads: int,
    num_mels: int = 80,
    *,
    clip: ClipMode = "pad",
    clip_samples: int = CLIP_SAMPLES,
) -> EncoderConfig:
    frontend = WhisperFrontendConfig(num_mels=num_mels, width=dim, clip=clip, clip_samples=clip_samples)
    return EncoderConfig(
        frontend=frontend,
        dim=dim,
        num_layers=num_layers,
        num_heads=num_heads,
        ffn_dim=4 * dim,
        pre_ln=True,
        positions="sinusoidal",
        max_positions=frontend.max_frames,
        feature_projection=False,
        attend_padding=clip == "pad",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        projection_dropout=0.0,
        layerdrop=0.0,
    )


def encoder_preset(name: str) -> EncoderConfig:
    if name not in DIMENSIONS:
        raise ValueError(f"Whisper presets are {sorted(DIMENSIONS)}, got {name!r}")
    return whisper_encoder(*DIMENSIONS[name])


def with_clip(cfg: EncoderConfig, clip: ClipMode) -> EncoderConfig:
    """The same encoder with clips under 30 s padded ("pad") or given their own length ("trim")."""
    return replace(cfg, frontend=replace(cfg.frontend, clip=clip), attend_padding=clip == "pad")


def _family(encoder: EncoderConfig, final_dim: int = 256) -> HubertConfig:
    # labels from the model's own layer: 50 Hz, 500 clusters until the label headers say otherwise
    return HubertConfig(encoder=encoder, num_classes=(500,), label_rate=50.0, final_dim=final_dim)


def whisper_tiny() -> HubertConfig:
    return _family(encoder_preset("tiny"))


def whisper_base() -> HubertConfig:
    return _family(encoder_preset("base"))


def whisper_small() -> HubertConfig:
    return _family(encoder_preset("small"))


def whisper_medium() -> HubertConfig:
    return _family(encoder_preset("medium"))


def whisper_large_v3() -> HubertConfig:
    return _family(encoder_preset("large_v3"))


def whisper_micro() -> HubertConfig:
    """Tiny's architecture shrunk for CPU tests: 32 wide, 2 layers, 2 heads, 16 mel bins, 2 s windows."""
    return _family(whisper_encoder(32, 2, 2, 16, clip_samples=32_000), final_dim=16)


PRESETS = {
    "tiny": whisper_tiny,
    "base": whisper_base,
    "small": whisper_small,
    "medium": whisper_medium,
    "large_v3": whisper_large_v3,
    "micro": whisper_micro,
}
