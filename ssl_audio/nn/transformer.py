"""The transformer encoder: convolutional positional embedding (or Whisper's sinusoids), post-LN (BASE) or pre-LN
(LARGE) layers, layerdrop, key padding masks, optional WavLM gated relative position bias.

Shapes: B batch, T frames, D model width, H heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssl_audio.nn.attention import RelativePositionBias, SelfAttention
from ssl_audio.nn.positions import SinusoidalPositions


class ConvPositionalEmbedding(nn.Module):
    """Grouped convolution over time with weight norm, then GELU; added to the input by the caller.

    An even kernel with padding K/2 yields one frame too many: the last is dropped.
    """

    def __init__(self, dim: int, kernel: int = 128, groups: int = 16) -> None:
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))  # fairseq's init
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., : -self.trim]
        return nn.functional.gelu(y).transpose(1, 2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, *, activation_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(nn.functional.gelu(self.fc1(x)))))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward with residuals; norms after each (post-LN) or before (pre-LN)."""

    def __init__(self, attention: SelfAttention, feed_forward: FeedForward, *, pre_ln: bool, dropout: float) -> None:
        super().__init__()
        dim = attention.out.out_features
        self.attention, self.feed_forward, self.pre_ln = attention, feed_forward, pre_ln
        self.attention_norm = nn.LayerNorm(dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding: Tensor | None, position_bias: Tensor | None) -> Tensor:
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.attention_norm(x), key_padding, position_bias))
            return x + self.feed_forward(self.ffn_norm(x))
        x = self.attention_norm(x + self.dropout(self.attention(x, key_padding, position_bias)))
        return self.ffn_norm(x + self.feed_forward(x))


@dataclass(frozen=True, kw_only=True)
class TransformerOutput:
    hidden_states: list[Tensor]  # [transformer input, layer 1, ..., layer L] (fewer when stopped early), (B, T, D)
    last: Tensor  # (B, T, D) output of the last layer run; with pre-LN, after the final LayerNorm


class TransformerEncoder(nn.Module):
    """Positional convolution, then layers. Post-LN normalises the input once before the layers (fairseq's
    `layer_norm_first=False`); pre-LN normalises the output once after them."""

    def __init__(
        self,
        layers: list[EncoderLayer],
        positional: ConvPositionalEmbedding | SinusoidalPositions,
        *,
        pre_ln: bool,
        dropout: float = 0.0,
        layerdrop: float = 0.0,
        relative_bias: RelativePositionBias | None = None,
        attend_padding: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.positional = positional
        self.norm = nn.LayerNorm(layers[0].attention.out.out_features)
        self.pre_ln, self.layerdrop = pre_ln, layerdrop
        self.attend_padding = attend_padding  # Whisper: attention sees its 30 s window's padding, as trained
        self.dropout = nn.Dropout(dropout)
        self.relative_bias = relative_bias
        for module in [*self.layers.modules(), *(relative_bias.modules() if relative_bias is not None else [])]:
            if isinstance(module, (nn.Linear, nn.Embedding)):  # fairseq's init_bert_params: N(0, 0.02), zero bias
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def kept_layers(self, layerdrop_seed: int | None) -> list[bool]:
        """Which layers run. Seeding with the update step drops the same layers on every DDP rank."""
        if not self.training or self.layerdrop == 0:
            return [True] * len(self.layers)
        generator = None if layerdrop_seed is None else torch.Generator().manual_seed(layerdrop_seed)
        return (torch.rand(len(self.layers), generator=generator) >= self.layerdrop).tolist()

    def forward(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        *,
        num_layers: int | None = None,
        layerdrop_seed: int | None = None,
        frozen_layers: int = 0,
    ) -> TransformerOutput:
        """x (B, T, D); key_padding (B, T) True at padded frames; stop after `num_layers` layers.

        `frozen_layers` n > 0 runs the input stage (positional conv, input norm) and the first n layers without
        gradients (fine-tuning only the top layers: no activations kept, no backward through the bottom)."""
        if num_layers is not None and not 0 <= num_layers <= len(self.layers):
            raise ValueError(f"num_layers must be in [0, {len(self.layers)}], got {num_layers}")
        if self.attend_padding:
            key_padding = None
        if not 0 <= frozen_layers <= len(self.layers):
            raise ValueError(f"frozen_layers must be in [0, {len(self.layers)}], got {frozen_layers}")
        outer = torch.is_grad_enabled()
        with torch.set_grad_enabled(outer and frozen_layers == 0):  # restores the caller's mode on exit
            return self._forward(x, key_padding, num_layers, layerdrop_seed, frozen_layers, outer)

    def _forward(
        self,
        x: Tensor,
        key_padding: Tensor | None,
        num_layers: int | None,
        layerdrop_seed: int | None,
        frozen: int,
        grad: bool,
    ) -> TransformerOutput:
        if key_padding is not None:
            x = x.masked_fill(key_padding[..., None], 0.0)  # padding must not leak through the positional conv
        x = x + self.positional(x)
        if not self.pre_ln:
            x = self.norm(x)
        x = self.dropout(x)
        bias = None if self.relative_bias is None else self.relative_bias(x.shape[1])
        hidden = [x]
        stop = len(self.layers) if num_layers is None else num_layers
        for i, (layer, keep) in enumerate(zip(self.layers[:stop], self.kept_layers(layerdrop_seed)[:stop])):
            if i == frozen and frozen > 0:  # the trainable top starts here: gradients from this layer on
                torch.set_grad_enabled(grad)
            if keep:
                x = layer(x, key_padding, bias)
            hidden.append(x)
        last = self.norm(x) if self.pre_ln and stop == len(self.layers) else x
        return TransformerOutput(hidden_states=hidden, last=last)
