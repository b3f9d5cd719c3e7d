"""fairseq checkpoints of wav2vec 2.0 and HuBERT, and the unilm checkpoints of WavLM, to our models.

A checkpoint is a pickle holding {"cfg" or "args": the config, "model": the state dict, ...}:
- fairseq before Hydra (2020): "args" is an argparse.Namespace with every field flat;
- fairseq with Hydra: "cfg" is a dict (or, in some checkpoints, an omegaconf DictConfig) with "model",
  "task", "criterion" sections;
- unilm WavLM: "cfg" is a flat dict of WavLMConfig fields;
- fine-tuned models keep the pretrained trunk under "w2v_encoder.w2v_model." and its config in "w2v_args".

Pickles can run code while loading, so they are read with torch.load(weights_only=True) and an explicit
allow-list of the plain-data types these checkpoints hold. Anything else (omegaconf objects, or a pickle
that calls a function) is refused unless the caller trusts the file (`trust_pickle=True`).
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_audio.interop.imported import Imported, gather, preset
from ssl_audio.interop.keymap import EncoderNames, KeyTable, encoder_table, rename_weight_norm
from ssl_audio.interop.unpickle import load_torch_file
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.nn.conv_extractor import ConvFrontendConfig

_NP_SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar  # numpy 2 / 1
# Plain-data types found in fairseq checkpoints besides tensors and containers: the config Namespace of
# 2020 checkpoints, and numpy scalars in their training statistics (extra_state). None of them runs code.
SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    np.dtype,
    _NP_SCALAR,
    (_NP_SCALAR, "numpy.core.multiarray.scalar"),  # the name numpy 1 pickled it under
    *(type(np.dtype(name)) for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")),
    type(np.dtype("bool")),
]
FINETUNED_PREFIX = "w2v_encoder.w2v_model."
DEFAULT_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"  # fairseq's default

# Where fairseq keeps our encoder's parts (unilm WavLM uses the same names plus its gate and bias parameters).
# A conv block is Sequential(conv, dropout, GroupNorm | Sequential(transpose, LayerNorm, transpose), GELU).
_NAMES = EncoderNames(
    extractor="feature_extractor.conv_layers.{i}.",
    conv="0.",
    conv_norm="2.",
    projection_norm="layer_norm.",
    projection="post_extract_proj.",
    transformer="encoder.",
    positional_conv="pos_conv.0.",
    final_norm="layer_norm.",
    relative_bias="layers.0.self_attn.relative_attention_bias.",
    layer="layers.{i}.",
    attention_norm="self_attn_layer_norm.",
    ffn_norm="final_layer_norm.",
    fc1="fc1.",
    fc2="fc2.",
    qkv=("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."),
    attention_out="self_attn.out_proj.",
    gate="self_attn.grep_linear.",
    gate_scale="self_attn.grep_a",
)
_HEADS: KeyTable = [
    ("masker.mask_embedding", "mask_emb"),
    ("quantizer.codevectors", "quantizer.vars"),
    ("quantizer.logits.", "quantizer.weight_proj."),
    ("project_targets.", "project_q."),
    ("project_context.", "final_proj."),  # wav2vec 2.0's final_proj
    ("final_proj.", "final_proj."),  # HuBERT's
    ("label_embeddings", "label_embs_concat"),
]


# ---- reading the pickle -------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """The checkpoint dict, unpickled with the allow-list; `trust_pickle` lifts it (the file can run code)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    checkpoint = load_torch_file(path, trust_pickle=trust_pickle, safe_globals=SAFE_GLOBALS)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict)")
    return checkpoint


def plain_config(value: Any) -> Any:
    """Namespaces and config objects (omegaconf's are Mappings) as plain dicts and lists."""
    if isinstance(value, argparse.Namespace):
        return plain_config(vars(value))
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain_config(v) for v in value]
    return value


def parse_layers(text: str, *, source: str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's conv_feature_layers, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", without eval: only list and
    tuple literals of integers joined by + and *."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(n) for n in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"{source}: conv_feature_layers {text!r}: only lists of (dim, kernel, stride) are allowed")

    try:
        layers = value(ast.parse(text, mode="eval").body)
    except SyntaxError:
        raise ValueError(f"{source}: conv_feature_layers {text!r} is not a list expression") from None
    if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ValueError(f"{source}: conv_feature_layers {text!r} must be a list of (dim, kernel, stride)")
    return tuple((int(c), int(k), int(s)) for c, k, s in layers)


# ---- config ---------------------------------------------------------------------------------------------------


def _sections(checkpoint: dict[str, Any], *, source: str) -> tuple[dict, dict, dict[str, Tensor], tuple[str, ...]]:
    """(model config, criterion config, trunk state dict, fine-tuning head keys), unwrapping a fine-tuned
    checkpoint."""
    if checkpoint.get("cfg") is not None:
        cfg = plain_config(checkpoint["cfg"])
        model = cfg["model"] if isinstance(cfg.get("model"), dict) else cfg  # unilm WavLM: a flat dict
        criterion = cfg.get("criterion") or {}
    elif checkpoint.get("args") is not None:  # pre-Hydra: one flat Namespace
        model = criterion = plain_config(checkpoint["args"])
    else:
        raise ValueError(f"{source}: holds neither 'cfg' nor 'args': cannot tell the architecture")
    state, head = checkpoint["model"], ()
    if any(k.startswith(FINETUNED_PREFIX) for k in state):
        if not model.get("w2v_args"):
            raise ValueError(f"{source}: a fine-tuned checkpoint without its pretraining config (w2v_args)")
        inner = plain_config(model["w2v_args"])
        model = inner["model"] if isinstance(inner.get("model"), dict) else inner
        criterion = {}
        head = tuple(k for k in state if not k.startswith(FINETUNED_PREFIX))  # e.g. the CTC projection
        state = {k[len(FINETUNED_PREFIX) :]: v for k, v in state.items() if k.startswith(FINETUNED_PREFIX)}
    return model, criterion, state, head


def _family(model: dict, state: dict[str, Tensor], *, source: str) -> str:
    name = str(model.get("_name") or model.get("arch") or "")
    if model.get("relative_position_embedding") or any("relative_attention_bias" in k for k in state):
        return "wavlm"
    if "hubert" in name or "label_embs_concat" in state:
        return "hubert"
    if name.startswith("wav2vec") or "quantizer.vars" in state or not name:
        return "wav2vec2"
    raise ValueError(f"{source}: model '_name' {name!r} is not wav2vec2, hubert or WavLM")


def config_from_fairseq(
    model: dict, criterion: dict, state: dict[str, Tensor], *, source: str
) -> tuple[str, Any, tuple[str, ...]]:
    """(family, family config, notes) from the checkpoint's config sections and weight shapes."""
    family = _family(model, state, source=source)
    get = model.get
    for key, wanted in (("activation_fn", "gelu"), ("layer_type", "transformer"), ("pos_conv_depth", 1)):
        if get(key, wanted) != wanted:
            raise ValueError(f"{source}: config key {key!r} is {get(key)!r}; ssl_audio implements only {wanted!r}")
    if family == "wavlm" and not get("gru_rel_pos", True):
        raise ValueError(f"{source}: config key 'gru_rel_pos' is False; ssl_audio's WavLM bias is always gated")
    mode = get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise ValueError(f"{source}: config key 'extractor_mode' is {mode!r}, not 'default' or 'layer_norm'")
    conv_layers = parse_layers(str(get("conv_feature_layers", DEFAULT_CONV_LAYERS)), source=source)
    encoder = EncoderConfig(
        frontend=ConvFrontendConfig(
            layers=conv_layers,
            mode="group_norm" if mode == "default" else "layer_norm",
            bias=bool(get("conv_bias", False)),
        ),
        dim=int(get("encoder_embed_dim", 768)),
        num_layers=int(get("encoder_layers", 12)),
        num_heads=int(get("encoder_attention_heads", 12)),
        ffn_dim=int(get("encoder_ffn_embed_dim", 3072)),
        pre_ln=bool(get("layer_norm_first", False)),
        pos_conv_kernel=int(get("conv_pos", 128)),
        pos_conv_groups=int(get("conv_pos_groups", 16)),
        relative_bias=family == "wavlm",
        num_buckets=int(get("num_buckets", 320)),
        max_distance=int(get("max_distance", 800)),
        dropout=float(get("dropout", 0.1)),
        attention_dropout=float(get("attention_dropout", 0.1)),
        activation_dropout=float(get("activation_dropout", 0.0)),
        projection_dropout=float(get("dropout_input", 0.0)),
        layerdrop=float(get("encoder_layerdrop", 0.0)),
    )
    base = preset(family, "large" if encoder.pre_ln else "base")
    masking = replace(
        base.masking,
        mask_prob=float(get("mask_prob", base.masking.mask_prob)),
        mask_length=int(get("mask_length", base.masking.mask_length)),
        no_overlap=bool(get("no_mask_overlap", base.masking.no_overlap)),
        min_space=int(get("mask_min_space", base.masking.min_space)),
        channel_prob=float(get("mask_channel_prob", base.masking.channel_prob)),
        channel_length=int(get("mask_channel_length", base.masking.channel_length)),
    )
    notes = []
    if get("mask_selection", "static") != "static":
        notes.append(f"mask_selection {get('mask_selection')!r}: ssl_audio masks static spans")
    if get("normalize"):
        notes.append("the model expects zero-mean, unit-variance waveforms (fairseq normalize: true); ssl_audio "
                     "feeds waveforms as they are: normalise them yourself when you use it")  # fmt: skip
    weights = list(criterion.get("loss_weights") or [])
    common = dict(encoder=encoder, masking=masking, feature_grad_mult=float(get("feature_grad_mult", 1.0)))
    if family == "wav2vec2":
        final_dim = int(get("final_dim", 256)) or encoder.dim
        temp = list(get("latent_temp", (2.0, 0.5, 0.999995)))
        groups = int(get("latent_groups", 2))
        cfg = replace(
            base,
            **common,
            quantizer=replace(
                base.quantizer,
                num_groups=groups,
                num_entries=int(get("latent_vars", 320)),
                code_dim=int(get("latent_dim", 0)) or final_dim,
                temp_start=float(temp[0]),
                temp_end=float(temp[1]),
                temp_decay=float(temp[2]),
            ),
            final_dim=final_dim,
            num_negatives=int(get("num_negatives", 100)),
            logit_temp=float(get("logit_temp", 0.1)),
            feature_dropout=float(get("dropout_features", 0.0)),
            diversity_weight=float(weights[0]) if len(weights) > 0 else base.diversity_weight,
            feature_penalty_weight=float(weights[1]) if len(weights) > 1 else base.feature_penalty_weight,
        )
        if get("cross_sample_negatives", 0) or get("codebook_negatives", 0):
            notes.append("cross-sample and codebook negatives are not implemented: ssl_audio samples in-utterance ones")
        return family, cfg, tuple(notes)
    final_dim = int(get("final_dim", base.final_dim)) or encoder.dim
    untie = bool(get("untie_final_proj", False))
    num_classes = base.num_classes
    if "label_embs_concat" in state:  # fairseq keeps the label sets' sizes in the task, not the model
        sets = state["final_proj.weight"].shape[0] // final_dim if untie else 1
        if sets != 1:
            raise ValueError(f"{source}: {sets} label sets in label_embs_concat; their sizes are not in the checkpoint")
        num_classes = (int(state["label_embs_concat"].shape[0]),)
    cfg = replace(
        base,
        **common,
        num_classes=num_classes,
        label_rate=float(get("label_rate", base.label_rate)),
        final_dim=final_dim,
        untie_final_proj=untie,
        logit_temp=float(get("logit_temp", 0.1)),
        masked_weight=float(criterion.get("pred_masked_weight", base.masked_weight)),
        unmasked_weight=float(criterion.get("pred_nomask_weight", base.unmasked_weight)),
        feature_penalty_weight=float(weights[0]) if weights else base.feature_penalty_weight,
    )
    return family, cfg, tuple(notes)


# ---- weights --------------------------------------------------------------------------------------------------


def _table(mode: str) -> KeyTable:
    """Our keys -> fairseq's; in layer_norm mode a block's norm is the LayerNorm inside its part 2."""
    names = _NAMES if mode == "group_norm" else replace(_NAMES, conv_norm="2.1.")
    return encoder_table(names) + _HEADS


def _prepare(state: dict[str, Tensor], cfg: EncoderConfig) -> dict[str, Tensor]:
    """Weight-norm names as ours; an identity post_extract_proj where fairseq has none (channels == width)."""
    out = rename_weight_norm(state, legacy=False)
    channels = cfg.frontend.out_channels
    if "post_extract_proj.weight" not in out and channels == cfg.dim:
        out["post_extract_proj.weight"] = torch.eye(cfg.dim)
        out["post_extract_proj.bias"] = torch.zeros(cfg.dim)
    return out


def read_fairseq(path: str | Path, *, trust_pickle: bool = False) -> Imported:
    """A fairseq (or unilm WavLM) checkpoint as our family model's weights and config."""
    return read_fairseq_checkpoint(load_checkpoint(path, trust_pickle=trust_pickle), source=str(path))


def read_fairseq_checkpoint(checkpoint: dict[str, Any], *, source: str) -> Imported:
    """An unpickled checkpoint dict (load_checkpoint) as our family model: the trunk of a fine-tuned one."""
    model, criterion, state, head = _sections(checkpoint, source=source)
    family, cfg, notes = config_from_fairseq(model, criterion, state, source=source)
    theirs = _prepare(state, cfg.encoder)
    if family == "wav2vec2" and not model.get("quantize_targets", True):  # project_q then maps raw features
        theirs = {k: v for k, v in theirs.items() if not k.startswith("project_q.")}
        notes += ("quantize_targets is false: no quantizer in the checkpoint; ours starts fresh",)
    ours, dropped, shape_notes = gather(family, cfg, theirs, _table(cfg.encoder.frontend.mode), source=source)
    return Imported(
        family=family, config=cfg, state=ours, source=source, dropped=head + dropped, notes=notes + shape_notes
    )
