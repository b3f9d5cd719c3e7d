"""The convolutional feature extractor: raw waveform -> frames at ~50 Hz.

Shapes: B batch, S samples, T frames, C channels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

ConvLayer = tuple[int, int, int]  # (channels, kernel, stride)
# wav2vec 2.0 / HuBERT / WavLM: 7 layers, 512 channels, total stride 320 (20 ms), receptive field 400 (25 ms).
BASE_CONV_LAYERS: tuple[ConvLayer, ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
ExtractorMode = Literal["group_norm", "layer_norm"]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` (wav2vec 2.0's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    return x if scale == 1.0 else _ScaleGrad.apply(x, scale)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvBlock(nn.Module):
    """Conv1d -> optional norm -> GELU."""

    def __init__(self, in_channels: int, layer: ConvLayer, *, norm: nn.Module | None, bias: bool) -> None:
        super().__init__()
        channels, self.kernel, self.stride = layer
        self.conv = nn.Conv1d(in_channels, channels, self.kernel, stride=self.stride, bias=bias)
        # fairseq's init: PyTorch's default shrinks the signal ~3x per layer, and after 7 layers the features
        # are ~1e-7 in mean square; LayerNorm then amplifies noise and training cannot start.
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, S) -> (B, C, T)
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return nn.functional.gelu(x)


class ConvFeatureExtractor(nn.Module):
    """Stacked strided convolutions.

    `mode="group_norm"` (BASE): a per-channel GroupNorm on the first layer only, no conv bias.
    `mode="layer_norm"` (LARGE): LayerNorm over channels after every layer, usually with conv bias.
    """

    def __init__(
        self,
        layers: tuple[ConvLayer, ...] = BASE_CONV_LAYERS,
        *,
        mode: ExtractorMode = "group_norm",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"extractor mode must be 'group_norm' or 'layer_norm', got {mode!r}")
        blocks, in_channels = [], 1
        for i, layer in enumerate(layers):
            channels = layer[0]
            if mode == "layer_norm":
                norm: nn.Module | None = ChannelLayerNorm(channels)
            elif i == 0:
                norm = nn.GroupNorm(channels, channels)
            else:
                norm = None
            blocks.append(ConvBlock(in_channels, layer, norm=norm, bias=bias))
            in_channels = channels
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_channels

    @property
    def receptive_field(self) -> int:
        field, jump = 1, 1
        for block in self.blocks:
            field += (block.kernel - 1) * jump
            jump *= block.stride
        return field

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames each input length yields: floor((S - K) / stride) + 1 per layer, never negative."""
        for block in self.blocks:
            lengths = torch.div(lengths - block.kernel, block.stride, rounding_mode="floor") + 1
            lengths = lengths.clamp(min=0)
        return lengths

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, S) waveforms -> (B, T, C) features and (B,) frame lengths (None when `lengths` is None)."""
        if wave.ndim != 2:
            raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(wave.shape)}")
        if wave.shape[1] < self.receptive_field:
            raise ValueError(f"waveforms have {wave.shape[1]} samples, fewer than one frame ({self.receptive_field})")
        x = wave.unsqueeze(1)  # (B, 1, S)
        for block in self.blocks:
            x = block(x)
        frame_lengths = None if lengths is None else self.output_lengths(lengths)
        return x.transpose(1, 2), frame_lengths  # (B, T, C)


def padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B,) lengths -> (B, max_length) bool, True at padded positions: samples or frames, the one mask of both."""
    return torch.arange(max_length, device=lengths.device)[None, :] >= lengths[:, None]


class FeatureProjection(nn.Module):
    """LayerNorm over extractor channels, then a linear map to the model width, then dropout.

    The two halves are separate because wav2vec 2.0 quantises the normalised, unprojected features.
    """

    def __init__(self, in_channels: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.linear = nn.Linear(in_channels, dim)
        self.dropout = nn.Dropout(dropout)

    def project(self, normed: Tensor) -> Tensor:  # (B, T, C) -> (B, T, D)
        return self.dropout(self.linear(normed))

    def forward(self, features: Tensor) -> Tensor:  # (B, T, C) -> (B, T, D)
        return self.project(self.norm(features))
