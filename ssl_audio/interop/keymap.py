"""The one renaming mechanism of interop/: our parameter names -> a source's (fairseq, transformers, torchaudio).

A `KeyTable` maps prefixes of our keys to prefixes of theirs, "{i}" standing for a layer index; a row may name
several of theirs (our fused q, k, v projection is their three, concatenated along dim 0). `EncoderNames` says
where a format keeps each part of our encoder, and `encoder_table` turns it into the rows: our encoder's names,
the per-layer prefixes and the q, k, v fusing are written here once. Weight norm is the other shared pattern:
published checkpoints name it weight_g / weight_v, our modules (torch's parametrizations) original0 / original1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_audio.nn.conv_extractor import ConvFrontendConfig

# (our key prefix, their key prefix or prefixes); "{i}" stands for a layer index. A prefix ending in "." maps a
# whole module; any other row maps exactly one key.
KeyTable = list[tuple[str, str | tuple[str, ...]]]
LEGACY_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


@dataclass(frozen=True, kw_only=True)
class EncoderNames:
    """Their names of our encoder's parts. `extractor` holds conv block {i}, `transformer` the transformer, whose
    layer {i} is `layer`; a part's name is relative to its holder. `qkv` names their q, k and v projections (or
    one fused projection) of our fused one."""

    extractor: str
    conv: str
    conv_norm: str
    projection_norm: str
    projection: str
    transformer: str
    positional_conv: str
    final_norm: str
    relative_bias: str
    layer: str
    attention_norm: str
    ffn_norm: str
    fc1: str
    fc2: str
    qkv: tuple[str, ...]
    attention_out: str
    gate: str
    gate_scale: str


# transformers' Wav2Vec2Model / HubertModel / WavLMModel; torchaudio's port keeps these names, nested differently.
TRANSFORMERS_NAMES = EncoderNames(
    extractor="feature_extractor.conv_layers.{i}.",
    conv="conv.",
    conv_norm="layer_norm.",
    projection_norm="feature_projection.layer_norm.",
    projection="feature_projection.projection.",
    transformer="encoder.",
    positional_conv="pos_conv_embed.conv.",
    final_norm="layer_norm.",
    relative_bias="layers.0.attention.rel_attn_embed.",
    layer="layers.{i}.",
    attention_norm="layer_norm.",
    ffn_norm="final_layer_norm.",
    fc1="feed_forward.intermediate_dense.",
    fc2="feed_forward.output_dense.",
    qkv=("attention.q_proj.", "attention.k_proj.", "attention.v_proj."),
    attention_out="attention.out_proj.",
    gate="attention.gru_rel_pos_linear.",
    gate_scale="attention.gru_rel_pos_const",
)


# transformers' WhisperEncoder (under "encoder." of WhisperModel, "model.encoder." of *ForConditionalGeneration):
# no conv stack, feature projection, positional conv or relative bias (those rows match none of our keys); the
# stem's two convolutions are `whisper_stem_table`'s rows.
WHISPER_NAMES = EncoderNames(
    extractor="-", conv="-", conv_norm="-", projection_norm="-", projection="-", positional_conv="-",
    relative_bias="-", gate="-", gate_scale="-",
    transformer="",
    final_norm="layer_norm.",
    layer="layers.{i}.",
    attention_norm="self_attn_layer_norm.",
    ffn_norm="final_layer_norm.",
    fc1="fc1.",
    fc2="fc2.",
    qkv=("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."),
    attention_out="self_attn.out_proj.",
)  # fmt: skip


def whisper_stem_table(*, ours: str = "encoder.", theirs: str = "") -> KeyTable:
    return [(f"{ours}extractor.stem.{conv}.", f"{theirs}{conv}.") for conv in ("conv1", "conv2")]


def encoder_table(names: EncoderNames, *, ours: str = "encoder.", theirs: str = "") -> KeyTable:
    """Rows for our encoder's keys (under `ours`: "encoder." in a family model, "" in a bare Encoder) to a
    format's (under `theirs`, e.g. the "wav2vec2." of a transformers *For* model)."""
    extractor, transformer = f"{theirs}{names.extractor}", f"{theirs}{names.transformer}"
    layer = f"{transformer}{names.layer}"
    our_layer = f"{ours}transformer.layers.{{i}}."
    return [
        (f"{ours}extractor.blocks.{{i}}.conv.", extractor + names.conv),
        (f"{ours}extractor.blocks.{{i}}.norm.", extractor + names.conv_norm),
        (f"{ours}projection.norm.", theirs + names.projection_norm),
        (f"{ours}projection.linear.", theirs + names.projection),
        (f"{ours}transformer.positional.conv.", transformer + names.positional_conv),
        (f"{ours}transformer.norm.", transformer + names.final_norm),
        (f"{ours}transformer.relative_bias.embedding.", transformer + names.relative_bias),
        (f"{our_layer}attention_norm.", layer + names.attention_norm),
        (f"{our_layer}ffn_norm.", layer + names.ffn_norm),
        (f"{our_layer}feed_forward.fc1.", layer + names.fc1),
        (f"{our_layer}feed_forward.fc2.", layer + names.fc2),
        (f"{our_layer}attention.qkv.", tuple(layer + name for name in names.qkv)),
        (f"{our_layer}attention.out.", layer + names.attention_out),
        (f"{our_layer}attention.gate.", layer + names.gate),
        (f"{our_layer}attention.gate_scale", layer + names.gate_scale),
    ]


def translate(key: str, table: KeyTable) -> tuple[str, ...]:
    """Our `key` under the source's name(s), by the first matching row of `table`; () when no row matches."""
    for ours, theirs in table:
        pattern = re.escape(ours).replace(re.escape("{i}"), r"(?P<i>\d+)")
        match = re.match(pattern, key)
        if match is None or (not ours.endswith(".") and match.end() != len(key)):
            continue
        index = match.groupdict().get("i")
        prefixes = (theirs,) if isinstance(theirs, str) else theirs
        rest = key[match.end() :]
        return tuple((p.replace("{i}", index) if index is not None else p) + rest for p in prefixes)
    return ()


def fuse(theirs: dict[str, Tensor], names: tuple[str, ...]) -> Tensor:
    """The tensor `translate` named: their one tensor, or their several concatenated along dim 0 (KeyError when
    one is missing)."""
    return theirs[names[0]] if len(names) == 1 else torch.cat([theirs[name] for name in names], dim=0)


def export(state: dict[str, Tensor], table: KeyTable) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """Our `state` under the source's names, a fused tensor split along dim 0 into copies of its parts.
    Returns (theirs, our keys no row maps)."""
    theirs, unmapped = {}, []
    for key, value in state.items():
        names = translate(key, table)
        if not names:
            unmapped.append(key)
        elif len(names) == 1:
            theirs[names[0]] = value
        else:
            theirs.update(zip(names, (part.clone() for part in value.chunk(len(names), dim=0))))
    return theirs, tuple(unmapped)


def rename_weight_norm(state: dict[str, Tensor], *, legacy: bool) -> dict[str, Tensor]:
    """`state` with weight norm's tensors named as our modules name them (parametrizations.weight.original0 / 1)
    or, when `legacy`, as published checkpoints do (weight_g / weight_v)."""
    renames = [(f".{new}", f".{old}") if legacy else (f".{old}", f".{new}") for old, new in LEGACY_WEIGHT_NORM.items()]
    out = {}
    for key, value in state.items():
        rename = next(((old, new) for old, new in renames if key.endswith(old)), None)
        out[key[: -len(rename[0])] + rename[1] if rename else key] = value
    return out


def conv_frontend(frontend: object, *, target: str) -> ConvFrontendConfig:
    """The conv stack's config; fairseq, transformers and torchaudio models have no other waveform front-end."""
    if not isinstance(frontend, ConvFrontendConfig):
        kind = getattr(frontend, "kind", type(frontend).__name__)
        raise ValueError(f"{target} models take a conv front-end; this model's is {kind!r}: it cannot be exported")
    return frontend
