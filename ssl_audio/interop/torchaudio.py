"""Convert torchaudio's wav2vec2 / HuBERT / WavLM models (`torchaudio.models.Wav2Vec2Model`) to our
`Encoder` and back, and read a state dict saved from one of torchaudio's builders. Only the encoder is converted:
torchaudio's models carry no pretraining heads except HuBERT's, whose `wav2vec2` part is taken.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torchaudio.models
from torch import Tensor, nn

from ssl_audio.interop.imported import Imported, preset
from ssl_audio.interop.keymap import (
    TRANSFORMERS_NAMES,
    KeyTable,
    conv_frontend,
    encoder_table,
    export,
    fuse,
    translate,
)
from ssl_audio.interop.unpickle import load_torch_file
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.nn.conv_extractor import ConvFrontendConfig

# torchaudio ported transformers' modules: the same names, with the feature projection and the transformer
# nested in an `encoder`. Its WavLM attention wraps torch's MultiheadAttention, whose q, k, v are one tensor.
_NAMES = replace(
    TRANSFORMERS_NAMES,
    projection_norm="encoder.feature_projection.layer_norm.",
    projection="encoder.feature_projection.projection.",
    transformer="encoder.transformer.",
)
_WAVLM_NAMES = replace(_NAMES, qkv=("attention.attention.in_proj_",), attention_out="attention.attention.out_proj.")
_BUILDER_PREFIXES = ("wav2vec2_", "hubert_", "wavlm_")
_GENERIC_BUILDERS = ("wav2vec2_model", "hubert_pretrain_model", "wavlm_model")  # the ones that need every argument


def _table(cfg: EncoderConfig) -> KeyTable:
    """Our Encoder's keys -> torchaudio's."""
    return encoder_table(_WAVLM_NAMES if cfg.relative_bias else _NAMES, ours="")


def state_from_torchaudio(theirs: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """torchaudio state dict -> our Encoder's state dict (q, k, v fused into one projection)."""
    table, ours = _table(cfg), {}
    for key in Encoder(cfg).state_dict():  # the keys our model expects, in order
        names = translate(key, table)
        if not names:
            raise KeyError(key)
        ours[key] = fuse(theirs, names)
    return ours


def state_to_torchaudio(ours: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """Our Encoder's state dict -> torchaudio's key names and layout."""
    theirs, unmapped = export(ours, _table(cfg))
    if unmapped:
        raise KeyError(unmapped[0])
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
        frontend=ConvFrontendConfig(
            layers=tuple((b.conv.out_channels, b.kernel_size, b.stride) for b in blocks),
            mode="layer_norm" if all(b.layer_norm is not None for b in blocks) else "group_norm",
            bias=blocks[0].conv.bias is not None,
        ),
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
    cfg = encoder.cfg
    conv = conv_frontend(cfg.frontend, target="torchaudio")
    common = dict(
        extractor_mode=conv.mode,
        extractor_conv_layer_config=list(conv.layers),
        extractor_conv_bias=conv.bias,
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
        model = torchaudio.models.wavlm_model(
            encoder_num_buckets=cfg.num_buckets, encoder_max_distance=cfg.max_distance, **common
        )
    else:
        model = torchaudio.models.wav2vec2_model(**common)
    model.load_state_dict(state_to_torchaudio(encoder.state_dict(), cfg))
    return model


def read_torchaudio(path: Path, builder: str | None, *, trust_pickle: bool = False) -> Imported:
    """A state dict saved from a torchaudio model (`torch.save(model.state_dict(), path)`) and its builder name."""
    builders = [n for n in dir(torchaudio.models) if n.startswith(_BUILDER_PREFIXES) and n not in _GENERIC_BUILDERS]
    if builder not in builders:
        raise ValueError(f"{path}: --builder must name the torchaudio builder of the state dict, one of {builders}")
    theirs = load_torch_file(path, trust_pickle=trust_pickle)  # weights_only: tensors and containers only
    if not isinstance(theirs, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(theirs).__name__}")
    head = tuple(k for k in theirs if k.startswith("aux."))  # a fine-tuned CTC head
    reference = getattr(torchaudio.models, builder)()
    try:
        reference.load_state_dict({k: v for k, v in theirs.items() if k not in head})
    except RuntimeError as err:
        raise ValueError(f"{path}: does not fit torchaudio's {builder}: {err}") from None
    encoder_cfg = config_from_torchaudio(reference)
    family = builder.split("_")[0]
    size = "large" if any(word in builder for word in ("large", "xlsr", "xlarge")) else "base"
    family_cfg = replace(preset(family, size), encoder=encoder_cfg)
    trunk = getattr(reference, "wav2vec2", reference)  # hubert_pretrain_* builders wrap the trunk
    encoder_state = state_from_torchaudio(trunk.state_dict(), encoder_cfg)
    state = {f"encoder.{k}": v for k, v in encoder_state.items()}
    heads = tuple(k for k in theirs if trunk is not reference and not k.startswith("wav2vec2."))
    notes = (f"only the encoder is taken from torchaudio; training settings are the {family} {size} preset's",)
    return Imported(family=family, config=family_cfg, state=state, source=str(path), dropped=head + heads, notes=notes)
