"""WavLM: HuBERT's masked prediction on an encoder with gated relative position bias.

The denoising half of WavLM (mixing a second utterance or noise into the input while the targets stay
the primary's) is a batch augmentation in the data pipeline, not part of the model.
"""

from __future__ import annotations

from dataclasses import replace

from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.hubert import Hubert, HubertConfig, hubert_base, hubert_tiny
from ssl_audio.nn.conv_extractor import ConvFrontendConfig

WavLM = Hubert  # same objective and heads; the difference is the encoder configuration


def _with_relative_bias(cfg: HubertConfig) -> HubertConfig:
    # 320 buckets, max distance 800 frames (WavLM paper; torchaudio wavlm_base/large)
    return replace(cfg, encoder=replace(cfg.encoder, relative_bias=True, num_buckets=320, max_distance=800))


def wavlm_base(num_classes: tuple[int, ...] = (500,), label_rate: float = 50.0) -> HubertConfig:
    """WavLM BASE (94.4M encoder parameters): HuBERT BASE plus gated relative position bias."""
    return _with_relative_bias(hubert_base(num_classes, label_rate))


def wavlm_base_plus(num_classes: tuple[int, ...] = (500,), label_rate: float = 50.0) -> HubertConfig:
    """WavLM BASE+: the BASE architecture; the paper trains it on 94k hours with more mixing."""
    return wavlm_base(num_classes, label_rate)


def wavlm_large(num_classes: tuple[int, ...] = (500,), label_rate: float = 50.0) -> HubertConfig:
    """WavLM LARGE (torchaudio wavlm_large): layer_norm extractor without conv bias, pre-LN, 24 x 1024."""
    encoder = EncoderConfig(
        frontend=ConvFrontendConfig(mode="layer_norm"), dim=1024, num_layers=24, num_heads=16, ffn_dim=4096,
        pre_ln=True, dropout=0.1, attention_dropout=0.1, projection_dropout=0.1, layerdrop=0.05,
    )  # fmt: skip
    return _with_relative_bias(
        HubertConfig(
            encoder=encoder, num_classes=num_classes, label_rate=label_rate, final_dim=768, feature_grad_mult=1.0
        )
    )


def wavlm_tiny(num_classes: tuple[int, ...] = (100,), label_rate: float = 100.0) -> HubertConfig:
    return _with_relative_bias(hubert_tiny(num_classes, label_rate))
