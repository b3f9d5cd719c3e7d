"""The trunk every family shares, and the `Encoder` view of it: waveform -> hidden states per layer.

Shapes: B batch, S samples, T frames, C extractor channels, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssl_audio.checks import fail, require_count, require_probability
from ssl_audio.nn.attention import RelativePositionBias, SelfAttention
from ssl_audio.nn.conv_extractor import (
    BASE_CONV_LAYERS,
    ConvFeatureExtractor,
    ConvLayer,
    ExtractorMode,
    FeatureProjection,
    padding_mask,
    scale_grad,
)
from ssl_audio.nn.transformer import ConvPositionalEmbedding, EncoderLayer, FeedForward, TransformerEncoder


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Architecture of the trunk. Defaults: wav2vec 2.0 / HuBERT BASE (fairseq, torchaudio)."""

    conv_layers: tuple[ConvLayer, ...] = BASE_CONV_LAYERS  # (channels, kernel, stride) per layer
    extractor_mode: ExtractorMode = "group_norm"  # BASE: group_norm; LARGE: layer_norm
    conv_bias: bool = False  # BASE: False; LARGE: True
    dim: int = 768  # model width D
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    pre_ln: bool = False  # fairseq's layer_norm_first: BASE False, LARGE True
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    relative_bias: bool = False  # WavLM's gated relative position bias
    num_buckets: int = 320  # WavLM
    max_distance: int = 800  # WavLM, in frames
    dropout: float = 0.1  # residual and transformer-input dropout
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1  # fairseq's dropout_input, after the feature projection
    layerdrop: float = 0.05  # wav2vec 2.0 BASE pretraining: 0.05; HuBERT BASE: 0.05

    def __post_init__(self) -> None:
        if not self.conv_layers:
            fail(self, "conv_layers", "must hold at least one (channels, kernel, stride) layer, got none")
        require_count(self, "conv_layers", "dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel")
        require_count(self, "pos_conv_groups", "num_buckets", "max_distance")
        for name in ("num_heads", "pos_conv_groups"):  # attention heads and conv groups split the width evenly
            if self.dim % getattr(self, name):
                fail(self, name, f"must divide dim {self.dim}, got {getattr(self, name)}")
        require_probability(
            self, "dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layerdrop"
        )

    @property
    def frame_stride(self) -> int:
        """Samples per frame (320 for the standard extractor: 50 Hz at 16 kHz)."""
        stride = 1
        for _, _, s in self.conv_layers:
            stride *= s
        return stride


@dataclass(frozen=True, kw_only=True)
class EncoderOutput:
    hidden_states: list[Tensor]  # [transformer input, layer 1, ..., layer L], each (B, T, D)
    last: Tensor  # (B, T, D): the encoder's output (after the final LayerNorm for pre-LN models)
    lengths: Tensor | None  # (B,) valid frames per row
    padding_mask: Tensor | None  # (B, T) True at padded frames


def build_transformer(cfg: EncoderConfig) -> TransformerEncoder:
    layers = [
        EncoderLayer(
            SelfAttention(cfg.dim, cfg.num_heads, dropout=cfg.attention_dropout, gated_bias=cfg.relative_bias),
            FeedForward(cfg.dim, cfg.ffn_dim, activation_dropout=cfg.activation_dropout, dropout=cfg.dropout),
            pre_ln=cfg.pre_ln,
            dropout=cfg.dropout,
        )
        for _ in range(cfg.num_layers)
    ]
    return TransformerEncoder(
        layers,
        ConvPositionalEmbedding(cfg.dim, cfg.pos_conv_kernel, cfg.pos_conv_groups),
        pre_ln=cfg.pre_ln,
        dropout=cfg.dropout,
        layerdrop=cfg.layerdrop,
        relative_bias=RelativePositionBias(cfg.num_heads, cfg.num_buckets, cfg.max_distance)
        if cfg.relative_bias
        else None,
    )


@dataclass(frozen=True, kw_only=True)
class Extracted:
    """What the pretraining families need from the front of the trunk."""

    normed: Tensor  # (B, T, C) LayerNorm-ed conv features, before projection (wav2vec 2.0's quantiser input)
    projected: Tensor  # (B, T, D) transformer input before masking
    penalty: Tensor  # scalar fp32 mean squared conv feature (the feature penalty)
    lengths: Tensor | None  # (B,) valid frames
    padding_mask: Tensor | None  # (B, T) True at padded frames


class Encoder(nn.Module):
    """Conv extractor + feature projection + transformer: no masking, no heads.

    Families hold one and call its parts in turn (extract, project, mask, transform); clustering and
    probing call it whole.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.extractor = ConvFeatureExtractor(cfg.conv_layers, mode=cfg.extractor_mode, bias=cfg.conv_bias)
        self.projection = FeatureProjection(self.extractor.out_channels, cfg.dim, cfg.projection_dropout)
        self.transformer = build_transformer(cfg)

    def extract(self, wave: Tensor, lengths: Tensor | None = None, *, grad_mult: float = 1.0) -> Extracted:
        """Conv features, their penalty and projection. `grad_mult` scales the extractor's gradient
        (wav2vec 2.0's feature_grad_mult; 0 freezes it and skips its backward entirely)."""
        if grad_mult > 0:
            features, frame_lengths = self.extractor(wave, lengths)
            features = scale_grad(features, grad_mult)
        else:
            with torch.no_grad():
                features, frame_lengths = self.extractor(wave, lengths)
        pad = None if frame_lengths is None else padding_mask(frame_lengths, features.shape[1])
        penalty = features.float().pow(2).mean()
        normed = self.projection.norm(features)
        projected = self.projection.project(normed)
        return Extracted(normed=normed, projected=projected, penalty=penalty, lengths=frame_lengths, padding_mask=pad)

    def forward(self, wave: Tensor, lengths: Tensor | None = None, *, num_layers: int | None = None) -> EncoderOutput:
        """(B, S) waveforms and (B,) sample lengths -> hidden states of every layer up to `num_layers`."""
        features, frame_lengths = self.extractor(wave, lengths)  # (B, T, C)
        pad = None if frame_lengths is None else padding_mask(frame_lengths, features.shape[1])
        out = self.transformer(self.projection(features), pad, num_layers=num_layers)
        return EncoderOutput(hidden_states=out.hidden_states, last=out.last, lengths=frame_lengths, padding_mask=pad)
