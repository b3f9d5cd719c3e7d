"""keymap.py, the one renaming mechanism of interop/, and the import layout it allows: format modules import the
leaf modules, never convert.py or each other."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchaudio.models import wav2vec2_model, wavlm_model

from ssl_audio.interop.keymap import (
    TRANSFORMERS_NAMES,
    encoder_table,
    export,
    fuse,
    rename_weight_norm,
    translate,
)
from ssl_audio.interop.torchaudio import state_to_torchaudio
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.wav2vec2 import tiny_encoder

INTEROP = Path(__file__).resolve().parents[2] / "ssl_audio" / "interop"
FORMATS = ("fairseq", "hf", "torchaudio")
LEAVES = ("keymap", "imported", "unpickle")


def test_translate_rows():
    table = [
        ("a.layers.{i}.qkv.", ("b.{i}.q.", "b.{i}.k.", "b.{i}.v.")),
        ("a.layers.{i}.", "b.{i}."),
        ("a.scale", "b.s"),
    ]
    assert translate("a.layers.12.qkv.weight", table) == ("b.12.q.weight", "b.12.k.weight", "b.12.v.weight")
    assert translate("a.layers.3.out.bias", table) == ("b.3.out.bias",)  # the first matching row wins
    assert translate("a.scale", table) == ("b.s",)
    assert translate("a.scale_extra", table) == ()  # a row without a trailing "." maps exactly one key
    assert translate("a.layers.x.out", table) == ()  # {i} is a number
    assert translate("z.a.scale", table) == ()  # rows match from the start


def test_export_splits_into_copies_and_fuse_joins_them_back():
    table = [("qkv.", ("q.", "k.", "v.")), ("out.", "o.")]
    qkv, out = torch.arange(24.0).reshape(6, 4), torch.arange(3.0)
    theirs, unmapped = export({"qkv.weight": qkv, "out.bias": out, "extra": out}, table)
    assert unmapped == ("extra",)
    assert list(theirs) == ["q.weight", "k.weight", "v.weight", "o.bias"]
    for part, rows in zip(("q", "k", "v"), (slice(0, 2), slice(2, 4), slice(4, 6))):
        assert torch.equal(theirs[f"{part}.weight"], qkv[rows])
    theirs["q.weight"].zero_()  # a part is a copy: changing it leaves our tensor alone
    assert qkv[0, 1] == 1.0
    theirs["q.weight"].copy_(qkv[:2])
    assert torch.equal(fuse(theirs, translate("qkv.weight", table)), qkv)
    assert fuse(theirs, translate("out.bias", table)) is theirs["o.bias"]
    with pytest.raises(KeyError, match="k.weight"):
        fuse({"q.weight": qkv[:2]}, translate("qkv.weight", table))


def test_weight_norm_names_both_ways():
    ours = {
        "pos.conv.parametrizations.weight.original0": 0,
        "pos.conv.parametrizations.weight.original1": 1,
        "pos.conv.bias": 2,
        "a.weight_gx": 3,
    }
    legacy = rename_weight_norm(ours, legacy=True)
    assert legacy == {"pos.conv.weight_g": 0, "pos.conv.weight_v": 1, "pos.conv.bias": 2, "a.weight_gx": 3}
    assert rename_weight_norm(legacy, legacy=False) == ours
    assert rename_weight_norm(ours, legacy=False) == ours  # already our names


@pytest.mark.parametrize("relative_bias", [False, True])
@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_encoder_table_names_every_torchaudio_parameter_once(mode, relative_bias):
    """Oracle: the parameter names of torchaudio's own model of the same architecture."""
    front = replace(tiny_encoder().frontend, mode=mode, bias=mode == "layer_norm")
    cfg = replace(tiny_encoder(), frontend=front, relative_bias=relative_bias)
    ours = Encoder(cfg).state_dict()
    kwargs = dict(
        extractor_mode=mode, extractor_conv_layer_config=list(front.layers), extractor_conv_bias=front.bias,
        encoder_embed_dim=cfg.dim, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=cfg.pos_conv_kernel,
        encoder_pos_conv_groups=cfg.pos_conv_groups, encoder_num_layers=cfg.num_layers,
        encoder_num_heads=cfg.num_heads, encoder_attention_dropout=0.0, encoder_ff_interm_features=cfg.ffn_dim,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=cfg.pre_ln,
        encoder_layer_drop=0.0, aux_num_out=None,
    )  # fmt: skip
    if relative_bias:
        reference = wavlm_model(encoder_num_buckets=cfg.num_buckets, encoder_max_distance=cfg.max_distance, **kwargs)
    else:
        reference = wav2vec2_model(**kwargs)
    shapes = {k: tuple(v.shape) for k, v in state_to_torchaudio(ours, cfg).items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_encoder_table_maps_no_two_keys_to_one():
    cfg = replace(tiny_encoder(), relative_bias=True)
    names = [
        name
        for key in Encoder(cfg).state_dict()
        for name in translate(f"encoder.{key}", encoder_table(TRANSFORMERS_NAMES))
    ]
    assert len(names) == len(set(names)) == len(Encoder(cfg).state_dict()) + 2 * cfg.num_layers * 2  # q, k, v


def _imports(module: str) -> tuple[set[str], list[str]]:
    """(modules of ssl_audio imported, those imported inside a function) by interop/`module`.py."""
    tree = ast.parse((INTEROP / f"{module}.py").read_text(encoding="utf-8"))
    everywhere = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    everywhere |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    lazy = [
        node.module
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssl_audio")
    ]
    return {m for m in everywhere if m.startswith("ssl_audio")}, lazy


@pytest.mark.parametrize("module", FORMATS + LEAVES + ("convert",))
def test_interop_imports_run_one_way(module):
    ours, lazy = _imports(module)
    interop = {m.removeprefix("ssl_audio.interop.") for m in ours if m.startswith("ssl_audio.interop.")}
    assert lazy == []
    if module in LEAVES:
        assert interop <= {"keymap"}, "a leaf imports no other interop module but keymap"
    elif module in FORMATS:
        assert interop <= set(LEAVES) and not any(m.startswith("ssl_audio.train") for m in ours)
    if module != "imported":
        assert "ssl_audio.train.families" not in ours, "the family table is reached through imported.py only"
