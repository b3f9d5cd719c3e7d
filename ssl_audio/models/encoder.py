"""The trunk every family shares, and the `Encoder` view of it: waveform -> hidden states per layer.

Shapes: B batch, S samples, T frames, C front-end channels, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ssl_audio.checks import fail, require_count, require_probability
from ssl_audio.nn.attention import RelativePositionBias, SelfAttention
from ssl_audio.nn.conv_extractor import ConvFrontendConfig, FeatureProjection, padding_mask, scale_grad
from ssl_audio.nn.frontend import Frontend
from ssl_audio.nn.frontends import FrontendConfig, build_frontend
from ssl_audio.nn.positions import SinusoidalPositions
from ssl_audio.nn.transformer import ConvPositionalEmbedding, EncoderLayer, FeedForward, TransformerEncoder


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Architecture of the trunk. Defaults: wav2vec 2.0 / HuBERT BASE (fairseq, torchaudio)."""

    frontend: FrontendConfig = field(default_factory=ConvFrontendConfig)  # tagged by `kind` (nn/frontends.py)
    dim: int = 768  # model width D
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    pre_ln: bool = False  # fairseq's layer_norm_first: BASE False, LARGE True
    positions: Literal["conv", "sinusoidal"] = "conv"  # conv: wav2vec 2.0's embedding; sinusoidal: Whisper's table
    max_positions: int = 1500  # rows of the sinusoidal table (Whisper: 30 s at 50 Hz)
    # False: the front-end's channels are the model width and feed the transformer as they are (Whisper has no
    # LayerNorm + Linear between its stem and its layers); True: wav2vec 2.0's feature projection
    feature_projection: bool = True
    attend_padding: bool = False  # Whisper's "pad" clips: attention sees the 30 s window's padding, as trained
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
        require_count(self, "dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel")
        require_count(self, "pos_conv_groups", "num_buckets", "max_distance", "max_positions")
        if self.positions not in ("conv", "sinusoidal"):
            fail(self, "positions", f"must be 'conv' or 'sinusoidal', got {self.positions!r}")
        frames = getattr(self.frontend, "max_frames", None)  # the longest input's frames, where the front-end caps it
        if self.positions == "sinusoidal" and frames is not None and frames > self.max_positions:
            fail(self, "max_positions", f"must cover the front-end's {frames} frames, got {self.max_positions}")
        if getattr(self.frontend, "clip", None) == "trim" and self.attend_padding:  # batches pad to their longest
            fail(self, "attend_padding", "must be false with frontend.clip 'trim': the batch padding is not Whisper's")
        if not self.feature_projection and self.frontend.out_channels != self.dim:
            channels = self.frontend.out_channels
            fail(self, "feature_projection", f"False needs front-end channels {channels} = dim {self.dim}")
        for name in ("num_heads", "pos_conv_groups"):  # attention heads and conv groups split the width evenly
            if self.dim % getattr(self, name):
                fail(self, name, f"must divide dim {self.dim}, got {getattr(self, name)}")
        require_probability(
            self, "dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layerdrop"
        )

    @property
    def hop(self) -> int:
        """Samples per frame, from the front-end's config (320 for the standard conv stack: 50 Hz at 16 kHz)."""
        return self.frontend.hop


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
    positional = (
        SinusoidalPositions(cfg.dim, cfg.max_positions)
        if cfg.positions == "sinusoidal"
        else ConvPositionalEmbedding(cfg.dim, cfg.pos_conv_kernel, cfg.pos_conv_groups)
    )
    return TransformerEncoder(
        layers,
        positional,
        pre_ln=cfg.pre_ln,
        attend_padding=cfg.attend_padding,
        dropout=cfg.dropout,
        layerdrop=cfg.layerdrop,
        relative_bias=RelativePositionBias(cfg.num_heads, cfg.num_buckets, cfg.max_distance)
        if cfg.relative_bias
        else None,
    )


@dataclass(frozen=True, kw_only=True)
class Extracted:
    """What the pretraining families need from the front of the trunk."""

    features: Tensor  # (B, T, C) front-end output
    normed: Tensor  # (B, T, C) LayerNorm-ed conv features, before projection (wav2vec 2.0's quantiser input)
    projected: Tensor  # (B, T, D) transformer input before masking
    lengths: Tensor | None  # (B,) valid frames
    padding_mask: Tensor | None  # (B, T) True at padded frames

    @property
    def penalty(self) -> Tensor:
        """Scalar fp32 mean squared front-end feature (the feature penalty); computed only for who asks."""
        return self.features.float().pow(2).mean()


class DirectFeatures(nn.Module):
    """In place of FeatureProjection when the front-end already yields the model width (Whisper's stem): no
    norm, no linear map, only the projection dropout."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def project(self, normed: Tensor) -> Tensor:
        return self.dropout(normed)


class Encoder(nn.Module):
    """Front-end + feature projection + transformer: no masking, no heads.

    Families hold one and call its parts in turn (extract, mask, transform); clustering and probing call it
    whole. The front-end is built from `cfg.frontend` here, or handed in (it must match the config's framing).
    The attribute keeps the name `extractor` so state-dict keys stay `encoder.extractor.*`.
    """

    def __init__(self, cfg: EncoderConfig, *, frontend: Frontend | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.extractor = build_frontend(cfg.frontend) if frontend is None else frontend
        if (self.extractor.hop, self.extractor.window) != (cfg.frontend.hop, cfg.frontend.window):
            raise ValueError(
                f"front-end {type(self.extractor).__name__} frames with hop {self.extractor.hop}, window "
                f"{self.extractor.window}; the config says hop {cfg.frontend.hop}, window {cfg.frontend.window}"
            )
        self.projection = (
            FeatureProjection(self.extractor.out_channels, cfg.dim, cfg.projection_dropout)
            if cfg.feature_projection
            else DirectFeatures(cfg.projection_dropout)
        )
        self.transformer = build_transformer(cfg)

    @property
    def frontend(self) -> Frontend:
        return self.extractor

    @property
    def hop(self) -> int:
        """Samples between frames."""
        return self.extractor.hop

    @property
    def window(self) -> int:
        """Samples one frame sees."""
        return self.extractor.window

    @property
    def offset(self) -> int:
        """Sample where frame 0's window starts (0, or negative for a centred front-end such as Whisper's)."""
        return self.extractor.offset

    @property
    def min_samples(self) -> int:
        """The shortest input that yields a frame."""
        return self.extractor.min_samples

    @property
    def max_samples(self) -> int | None:
        """The longest input it takes (None: any)."""
        return self.extractor.max_samples

    def extract(self, wave: Tensor, lengths: Tensor | None = None, *, grad_mult: float = 1.0) -> Extracted:
        """Front-end features, their penalty and projection. `grad_mult` scales the front-end's gradient
        (wav2vec 2.0's feature_grad_mult; 0 freezes it and skips its backward entirely)."""
        if grad_mult > 0:
            features, frame_lengths = self.extractor(wave, lengths)
            features = scale_grad(features, grad_mult)
        else:
            with torch.no_grad():
                features, frame_lengths = self.extractor(wave, lengths)
        pad = None if frame_lengths is None else padding_mask(frame_lengths, features.shape[1])
        normed = self.projection.norm(features)
        projected = self.projection.project(normed)
        return Extracted(features=features, normed=normed, projected=projected, lengths=frame_lengths, padding_mask=pad)

    def forward(self, wave: Tensor, lengths: Tensor | None = None, *, num_layers: int | None = None) -> EncoderOutput:
        """(B, S) waveforms and (B,) sample lengths -> hidden states of every layer up to `num_layers`."""
        front = self.extract(wave, lengths)
        out = self.transformer(front.projected, front.padding_mask, num_layers=num_layers)
        return EncoderOutput(
            hidden_states=out.hidden_states, last=out.last, lengths=front.lengths, padding_mask=front.padding_mask
        )
