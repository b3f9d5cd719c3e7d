"""Hugging Face transformers folders (config.json + model.safetensors or pytorch_model.bin) to our models and back.

Read: Wav2Vec2Model / Wav2Vec2ForPreTraining (quantizer, project_q, project_hid) / Wav2Vec2For*, HubertModel /
HubertFor*, WavLMModel / WavLMFor*. Task heads (lm_head, classifiers) are dropped. Written: Wav2Vec2ForPreTraining
(trunk and wav2vec 2.0 heads), HubertModel or WavLMModel (transformers has no HuBERT label heads: ours are
dropped). config.json also carries our full family config under "ssl_audio", so that the training settings
transformers has no field for (masking, Gumbel schedule, loss weights) survive a round trip.

transformers reads the positional convolution's weight norm both as weight_g / weight_v (the layout of the
published checkpoints and of transformers before torch's parametrizations) and as
parametrizations.weight.original0 / original1; we read both and write the former.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.configs import to_dict
from ssl_audio.interop.imported import Imported, gather, preset, resolve_config
from ssl_audio.interop.keymap import (
    TRANSFORMERS_NAMES,
    KeyTable,
    conv_frontend,
    encoder_table,
    export,
    rename_weight_norm,
)
from ssl_audio.interop.unpickle import load_torch_file
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.registry import ModelConfig
from ssl_audio.nn.conv_extractor import ConvFrontendConfig

FAMILY_OF = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm"}  # transformers model_type -> family
BASE_MODEL = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel"}
PRETRAINING = "Wav2Vec2ForPreTraining"
LAYER_NORM_EPS = 1e-5  # our LayerNorms and GroupNorm use torch's default
WAV2VEC2_HEADS = ("quantizer", "project_targets", "project_context")

# Wav2Vec2ForPreTraining's heads, at the top level of its state dict.
_HEADS: KeyTable = [
    ("quantizer.codevectors", "quantizer.codevectors"),
    ("quantizer.logits.", "quantizer.weight_proj."),
    ("project_targets.", "project_q."),
    ("project_context.", "project_hid."),
]

# config.json values our modules implement; anything else is refused rather than silently mis-built.
_SUPPORTED = {
    "feat_extract_activation": "gelu",
    "hidden_act": "gelu",
    "layer_norm_eps": LAYER_NORM_EPS,
    "add_adapter": False,
    "adapter_attn_dim": None,
    "feat_proj_layer_norm": True,  # HuBERT variants without it (DistilHuBERT) have no feature LayerNorm
    "conv_pos_batch_norm": False,
}


def _table(prefix: str, *, heads: bool = True) -> KeyTable:
    """Our keys -> transformers', the base model's under `prefix` ("wav2vec2." etc. in the *For* models)."""
    trunk = encoder_table(TRANSFORMERS_NAMES, theirs=prefix) + [("masker.mask_embedding", f"{prefix}masked_spec_embed")]
    return trunk + (_HEADS if heads else [])


def read_weights(folder: Path) -> dict[str, Tensor]:
    """model.safetensors, pytorch_model.bin, or their sharded index."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).is_file():
            index = _read_index(folder / index_name)
            state: dict[str, Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                state.update(_read_file(folder / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _read_file(folder / name)
    raise ValueError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _read_index(path: Path) -> dict[str, Any]:
    """A sharded checkpoint's index: {"weight_map": {parameter: shard file}}."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise ValueError(f"{path}: lacks the 'weight_map' of parameters to shard files")
    return index


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except SafetensorError as err:  # truncated, or not safetensors at all
            raise ValueError(f"{path}: truncated or not a safetensors file ({err})") from None
    state = load_torch_file(path)  # weights_only: a .bin is a pickle, and it must not run code
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def hf_config(folder: Path) -> Any:
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ValueError(f"{folder}: reading a transformers folder needs the transformers package") from None
    try:
        return AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as err:
        raise ValueError(f"{folder / 'config.json'}: not a transformers config ({err})") from None


def config_from_hf(hf: Any, *, source: str) -> tuple[str, Any]:
    """(family, family config) of a transformers config object (all fields resolved with their defaults)."""
    model_type = getattr(hf, "model_type", None)
    if model_type not in FAMILY_OF:
        raise ValueError(f"{source}: config key 'model_type' is {model_type!r}; supported: {sorted(FAMILY_OF)}")
    family = FAMILY_OF[model_type]
    for key, wanted in _SUPPORTED.items():
        value = getattr(hf, key, wanted)
        if value != wanted:
            raise ValueError(f"{source}: config key {key!r} is {value!r}; ssl_audio models implement only {wanted!r}")
    if hf.feat_extract_norm not in ("group", "layer"):
        raise ValueError(f"{source}: config key 'feat_extract_norm' is {hf.feat_extract_norm!r}, not group or layer")
    encoder = EncoderConfig(
        frontend=ConvFrontendConfig(
            layers=tuple(zip(hf.conv_dim, hf.conv_kernel, hf.conv_stride)),
            mode="group_norm" if hf.feat_extract_norm == "group" else "layer_norm",
            bias=bool(hf.conv_bias),
        ),
        dim=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        ffn_dim=hf.intermediate_size,
        pre_ln=bool(hf.do_stable_layer_norm),
        pos_conv_kernel=hf.num_conv_pos_embeddings,
        pos_conv_groups=hf.num_conv_pos_embedding_groups,
        relative_bias=family == "wavlm",
        num_buckets=getattr(hf, "num_buckets", 320),
        max_distance=getattr(hf, "max_bucket_distance", 800),
        dropout=float(hf.hidden_dropout),
        attention_dropout=float(hf.attention_dropout),
        activation_dropout=float(hf.activation_dropout),
        projection_dropout=float(hf.feat_proj_dropout),
        layerdrop=float(hf.layerdrop),
    )
    # Training settings transformers has no field for: ours when we wrote the folder, else a preset's
    # (LARGE for pre-LN models, as every published pre-LN model is a LARGE one).
    ours = getattr(hf, "ssl_audio", None)
    if isinstance(ours, dict) and ours.get("family") == family:
        base = resolve_config(ModelConfig(family=family, preset="base", config=ours.get("config", {})))
    else:
        base = preset(family, "large" if encoder.pre_ln else "base")
    if family != "wav2vec2":
        return family, replace(base, encoder=encoder)
    return family, replace(
        base,
        encoder=encoder,
        quantizer=replace(
            base.quantizer,
            num_groups=hf.num_codevector_groups,
            num_entries=hf.num_codevectors_per_group,
            code_dim=hf.codevector_dim,
        ),
        final_dim=hf.proj_codevector_dim,
        num_negatives=hf.num_negatives,
        logit_temp=float(hf.contrastive_logits_temperature),
        diversity_weight=float(hf.diversity_loss_weight),
        feature_dropout=float(hf.feat_quantizer_dropout),
    )


def read_hf(folder: str | Path) -> Imported:
    """A transformers folder as our family model's weights and config."""
    folder = Path(folder)
    hf = hf_config(folder)
    family, cfg = config_from_hf(hf, source=str(folder / "config.json"))
    theirs = rename_weight_norm(read_weights(folder), legacy=False)
    base_prefix = f"{hf.model_type}."  # the *For* models hold the trunk under the base model's prefix
    prefix = base_prefix if any(k.startswith(base_prefix) for k in theirs) else ""
    state, dropped, notes = gather(family, cfg, theirs, _table(prefix), source=str(folder))
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file() and json.loads(preprocessor.read_text(encoding="utf-8")).get("do_normalize"):
        notes += (
            "the model expects zero-mean, unit-variance waveforms (preprocessor do_normalize); ssl_audio feeds "
            "waveforms as they are: normalise them yourself when you use it",
        )
    return Imported(family=family, config=cfg, state=state, source=str(folder), dropped=dropped, notes=notes)


def config_to_hf(family: str, cfg: Any, *, architecture: str) -> dict[str, Any]:
    """The fields of transformers' config class (Wav2Vec2Config, HubertConfig, WavLMConfig) for our config."""
    enc: EncoderConfig = cfg.encoder
    conv = conv_frontend(enc.frontend, target="transformers")
    fields: dict[str, Any] = dict(
        architectures=[architecture],
        feat_extract_norm="group" if conv.mode == "group_norm" else "layer",
        feat_extract_activation="gelu",
        conv_dim=[c for c, _, _ in conv.layers],
        conv_kernel=[k for _, k, _ in conv.layers],
        conv_stride=[s for _, _, s in conv.layers],
        conv_bias=conv.bias,
        hidden_size=enc.dim,
        num_hidden_layers=enc.num_layers,
        num_attention_heads=enc.num_heads,
        intermediate_size=enc.ffn_dim,
        hidden_act="gelu",
        do_stable_layer_norm=enc.pre_ln,
        num_conv_pos_embeddings=enc.pos_conv_kernel,
        num_conv_pos_embedding_groups=enc.pos_conv_groups,
        hidden_dropout=enc.dropout,
        attention_dropout=enc.attention_dropout,
        activation_dropout=enc.activation_dropout,
        feat_proj_dropout=enc.projection_dropout,
        layerdrop=enc.layerdrop,
        layer_norm_eps=LAYER_NORM_EPS,
        ssl_audio={"family": family, "config": to_dict(cfg)},
    )
    if family == "wav2vec2":
        fields.update(
            num_codevector_groups=cfg.quantizer.num_groups,
            num_codevectors_per_group=cfg.quantizer.num_entries,
            codevector_dim=cfg.quantizer.code_dim,
            proj_codevector_dim=cfg.final_dim,
            contrastive_logits_temperature=cfg.logit_temp,
            num_negatives=cfg.num_negatives,
            diversity_loss_weight=cfg.diversity_weight,
            feat_quantizer_dropout=cfg.feature_dropout,
        )
    if family == "hubert":
        fields.update(feat_proj_layer_norm=True)
    if family == "wavlm":
        fields.update(num_buckets=enc.num_buckets, max_bucket_distance=enc.max_distance)
    return fields


def state_to_hf(state: dict[str, Tensor], *, heads: bool) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """Our full state -> transformers keys (wav2vec 2.0 heads only when `heads`); returns (theirs, dropped)."""
    theirs, dropped = export(state, _table("wav2vec2." if heads else "", heads=heads))
    theirs = rename_weight_norm(theirs, legacy=True)
    owned = {name: value.detach().clone().contiguous() for name, value in theirs.items()}  # safetensors: no sharing
    return owned, tuple(sorted({key.split(".")[0] for key in dropped}))


def write_hf(family: str, cfg: Any, state: dict[str, Tensor], folder: Path, *, fresh: Sequence[str] = ()) -> tuple:
    """config.json, model.safetensors and preprocessor_config.json into `folder`; returns the parts left out.

    wav2vec2 is written as Wav2Vec2ForPreTraining unless its heads were never trained (`fresh`).
    """
    from transformers import CONFIG_MAPPING, Wav2Vec2FeatureExtractor

    heads = family == "wav2vec2" and not set(WAV2VEC2_HEADS) & set(fresh)
    architecture = PRETRAINING if heads else BASE_MODEL[family]
    folder.mkdir(parents=True)
    CONFIG_MAPPING[family](**config_to_hf(family, cfg, architecture=architecture)).save_pretrained(folder)
    theirs, dropped = state_to_hf(state, heads=heads)
    save_file(theirs, folder / "model.safetensors", metadata={"format": "pt"})
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=False,  # our pipeline feeds waveforms as they are
        return_attention_mask=cfg.encoder.frontend.mode == "layer_norm",  # group norm spans padding (as HF's base)
    ).save_pretrained(folder)
    return dropped
