"""Convert torchaudio's wav2vec2 / HuBERT / WavLM models (`torchaudio.models.Wav2Vec2Model`) to our
`Encoder` and back. Only the encoder is converted: torchaudio's models carry no pretraining heads
except HuBERT's, whose `wav2vec2` part is taken.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from ssl_audio.models.encoder import Encoder, EncoderConfig

_LAYER = r"transformer\.layers\.{i}\."  # ours
_TA_LAYER = "encoder.transformer.layers.{i}."  # torchaudio's
# Our key pattern -> torchaudio's, for keys that map one to one. `{i}` is a layer index.
_RENAMES: list[tuple[str, str]] = [
    (r"extractor\.blocks\.{i}\.conv\.", "feature_extractor.conv_layers.{i}.conv."),
    (r"extractor\.blocks\.{i}\.norm\.", "feature_extractor.conv_layers.{i}.layer_norm."),
    (r"projection\.norm\.", "encoder.feature_projection.layer_norm."),
    (r"projection\.linear\.", "encoder.feature_projection.projection."),
    (r"transformer\.positional\.conv\.", "encoder.transformer.pos_conv_embed.conv."),
    (r"transformer\.norm\.", "encoder.transformer.layer_norm."),
    (r"transformer\.relative_bias\.embedding\.", "encoder.transformer.layers.0.attention.rel_attn_embed."),
    (_LAYER + r"attention_norm\.", _TA_LAYER + "layer_norm."),
    (_LAYER + r"ffn_norm\.", _TA_LAYER + "final_layer_norm."),
    (_LAYER + r"feed_forward\.fc1\.", _TA_LAYER + "feed_forward.intermediate_dense."),
    (_LAYER + r"feed_forward\.fc2\.", _TA_LAYER + "feed_forward.output_dense."),
    (_LAYER + r"attention\.gate\.", _TA_LAYER + "attention.gru_rel_pos_linear."),
    (_LAYER + r"attention\.gate_scale$", _TA_LAYER + "attention.gru_rel_pos_const"),
]
_QKV = re.compile(r"transformer\.layers\.(\d+)\.attention\.qkv\.(weight|bias)$")
_OUT = re.compile(r"transformer\.layers\.(\d+)\.attention\.out\.(weight|bias)$")


def _rename(key: str) -> str:
    for ours, theirs in _RENAMES:
        pattern = ours.replace("{i}", r"(?P<i>\d+)")
        match = re.match(pattern, key)
        if match:
            prefix = theirs.replace("{i}", match.groupdict().get("i") or "")
            return prefix + key[match.end() :]
    raise KeyError(key)


def _qkv_keys(layer: str, kind: str, wavlm: bool) -> list[str]:
    base = f"encoder.transformer.layers.{layer}.attention."
    if wavlm:
        return [base + f"attention.in_proj_{kind}"]
    return [base + f"{name}_proj.{kind}" for name in ("q", "k", "v")]


def _out_key(layer: str, kind: str, wavlm: bool) -> str:
    return f"encoder.transformer.layers.{layer}.attention." + ("attention." if wavlm else "") + f"out_proj.{kind}"


def state_from_torchaudio(theirs: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """torchaudio state dict -> our Encoder's state dict (q, k, v fused into one projection)."""
    ours = {}
    for key in Encoder(cfg).state_dict():  # the keys our model expects, in order
        if match := _QKV.match(key):
            parts = [theirs[k] for k in _qkv_keys(*match.groups(), cfg.relative_bias)]
            ours[key] = torch.cat(parts, dim=0)
        elif match := _OUT.match(key):
            ours[key] = theirs[_out_key(*match.groups(), cfg.relative_bias)]
        else:
            ours[key] = theirs[_rename(key)]
    return ours


def state_to_torchaudio(ours: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """Our Encoder's state dict -> torchaudio's key names and layout."""
    theirs = {}
    for key, value in ours.items():
        if match := _QKV.match(key):
            keys = _qkv_keys(*match.groups(), cfg.relative_bias)
            for k, part in zip(keys, value.chunk(len(keys), dim=0)):
                theirs[k] = part.clone()
        elif match := _OUT.match(key):
            theirs[_out_key(*match.groups(), cfg.relative_bias)] = value
        else:
            theirs[_rename(key)] = value
    return theirs


def config_from_torchaudio(model: nn.Module) -> EncoderConfig:
    """Read the architecture off a torchaudio Wav2Vec2Model (or HuBERTPretrainModel)."""
    model = getattr(model, "wav2vec2", model)
    blocks = model.feature_extractor.conv_layers
    transformer = model.encoder.transformer
    layer = transformer.layers[0]
    attention = layer.attention
    wavlm = hasattr(attention, "rel_attn_embed")
    return EncoderConfig(
        conv_layers=tuple((b.conv.out_channels, b.kernel_size, b.stride) for b in blocks),
        extractor_mode="layer_norm" if all(b.layer_norm is not None for b in blocks) else "group_norm",
        conv_bias=blocks[0].conv.bias is not None,
        dim=attention.embed_dim,
        num_layers=len(transformer.layers),
        num_heads=attention.num_heads,
        ffn_dim=layer.feed_forward.intermediate_dense.out_features,
        pre_ln=layer.layer_norm_first,
        pos_conv_kernel=transformer.pos_conv_embed.kernel_size,
        pos_conv_groups=transformer.pos_conv_embed.conv.groups,
        relative_bias=wavlm,
        num_buckets=attention.num_buckets if wavlm else 320,
        max_distance=attention.max_distance if wavlm else 800,
        dropout=layer.dropout.p,
        attention_dropout=attention.dropout,
        activation_dropout=layer.feed_forward.intermediate_dropout.p,
        projection_dropout=model.encoder.feature_projection.dropout.p,
        layerdrop=transformer.layer_drop,
    )


def from_torchaudio(model: nn.Module) -> Encoder:
    """A torchaudio model as our Encoder, weights included."""
    cfg = config_from_torchaudio(model)
    encoder = Encoder(cfg)
    encoder.load_state_dict(state_from_torchaudio(getattr(model, "wav2vec2", model).state_dict(), cfg))
    return encoder


def to_torchaudio(encoder: Encoder) -> nn.Module:
    """Our Encoder as a torchaudio Wav2Vec2Model, weights included."""
    from torchaudio.models import wav2vec2_model, wavlm_model

    cfg = encoder.cfg
    common = dict(
        extractor_mode=cfg.extractor_mode,
        extractor_conv_layer_config=list(cfg.conv_layers),
        extractor_conv_bias=cfg.conv_bias,
        encoder_embed_dim=cfg.dim,
        encoder_projection_dropout=cfg.projection_dropout,
        encoder_pos_conv_kernel=cfg.pos_conv_kernel,
        encoder_pos_conv_groups=cfg.pos_conv_groups,
        encoder_num_layers=cfg.num_layers,
        encoder_num_heads=cfg.num_heads,
        encoder_attention_dropout=cfg.attention_dropout,
        encoder_ff_interm_features=cfg.ffn_dim,
        encoder_ff_interm_dropout=cfg.activation_dropout,
        encoder_dropout=cfg.dropout,
        encoder_layer_norm_first=cfg.pre_ln,
        encoder_layer_drop=cfg.layerdrop,
        aux_num_out=None,
    )
    if cfg.relative_bias:
        model = wavlm_model(encoder_num_buckets=cfg.num_buckets, encoder_max_distance=cfg.max_distance, **common)
    else:
        model = wav2vec2_model(**common)
    model.load_state_dict(state_to_torchaudio(encoder.state_dict(), cfg))
    return model
