"""transformers Whisper folders (WhisperModel / WhisperForConditionalGeneration) <-> our whisper family.

Read: the encoder only (the decoder and the LM head are dropped). Whisper's k_proj has no bias: the fused qkv
gets a zero key bias, which cannot change attention (models/whisper.py). embed_positions must be Whisper's
sinusoids (our table is derived, not stored): a folder whose table differs is refused. Written: a WhisperModel
folder whose encoder is ours (the key bias dropped: exact, see above; the table written as transformers keeps
it); the decoder is not ours, so transformers initialises it when it loads the folder. config.json carries our
family config under "ssl_audio", as hf.py does, so the HuBERT settings survive a round trip.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from ssl_audio.configs import to_dict
from ssl_audio.interop.hf import read_weights
from ssl_audio.interop.imported import Imported, gather, preset, resolve_config
from ssl_audio.interop.keymap import WHISPER_NAMES, KeyTable, encoder_table, export, whisper_stem_table
from ssl_audio.models.registry import ModelConfig
from ssl_audio.models.whisper import whisper_encoder
from ssl_audio.nn.positions import sinusoids
from ssl_audio.nn.whisper_frontend import MEL_HOP, STEM_HOP, WhisperFrontendConfig

FAMILY = "whisper"
ARCHITECTURE = "WhisperModel"
POSITIONS_TOLERANCE = 1e-3  # published tables are the sinusoids rounded to fp16 (about 5e-4 at 1)
# config.json values our modules implement; anything else is refused rather than silently mis-built
_SUPPORTED = {"activation_function": "gelu", "scale_embedding": False}


def is_whisper_folder(folder: Path) -> bool:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") == FAMILY
    except (OSError, json.JSONDecodeError):
        return False  # the general reader reports what is wrong with it


def table(theirs: str = "encoder.") -> KeyTable:
    return whisper_stem_table(theirs=theirs) + encoder_table(WHISPER_NAMES, theirs=theirs)


def config_from_whisper(hf: dict[str, Any], *, source: str) -> Any:
    for key, wanted in _SUPPORTED.items():
        if hf.get(key, wanted) != wanted:
            raise ValueError(f"{source}: config key {key!r} is {hf[key]!r}; ssl_audio implements only {wanted!r}")
    try:
        dim, layers, heads = hf["d_model"], hf["encoder_layers"], hf["encoder_attention_heads"]
        mels, positions, ffn = hf["num_mel_bins"], hf["max_source_positions"], hf["encoder_ffn_dim"]
    except KeyError as err:
        raise ValueError(f"{source}: config key {err.args[0]!r} is missing") from None
    encoder = whisper_encoder(dim, layers, heads, mels, clip_samples=positions * STEM_HOP)
    encoder = replace(encoder, ffn_dim=ffn)
    ours = hf.get("ssl_audio")
    if isinstance(ours, dict) and ours.get("family") == FAMILY:  # we wrote it: our clip mode and HuBERT settings
        base = resolve_config(ModelConfig(family=FAMILY, preset="tiny", config=ours.get("config", {})))
        frontend = replace(encoder.frontend, clip=base.encoder.frontend.clip)
        encoder = replace(encoder, frontend=frontend, attend_padding=base.encoder.attend_padding)
    else:
        base = preset(FAMILY, "tiny")
    return replace(base, encoder=encoder)


def read_hf_whisper(folder: str | Path) -> Imported:
    folder = Path(folder)
    path = folder / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    cfg = config_from_whisper(hf, source=str(path))
    theirs = read_weights(folder)
    prefix = "model.encoder." if any(k.startswith("model.encoder.") for k in theirs) else "encoder."
    for i in range(cfg.encoder.num_layers):  # Whisper's k_proj has no bias: an inert zero one for our fused qkv
        bias = theirs.get(f"{prefix}layers.{i}.self_attn.q_proj.bias")
        if bias is not None:
            theirs.setdefault(f"{prefix}layers.{i}.self_attn.k_proj.bias", torch.zeros_like(bias))
    table_key = f"{prefix}embed_positions.weight"
    if table_key in theirs:
        stored = theirs[table_key].float()
        expected = sinusoids(*stored.shape)
        gap = (stored - expected).abs().max().item()
        if gap > POSITIONS_TOLERANCE:
            raise ValueError(f"{folder}: {table_key} is not Whisper's sinusoid table (off by {gap:.3g})")
    state, unused, notes = gather(FAMILY, cfg, theirs, table(prefix), source=str(folder))
    decoder = [k for k in unused if not k.startswith(prefix)]
    dropped = tuple(k for k in unused if k.startswith(prefix) and k != table_key)
    if decoder:
        notes += (f"the decoder and LM head ({len(decoder)} tensors) are dropped: ssl_audio keeps the encoder",)
    return Imported(family=FAMILY, config=cfg, state=state, source=str(folder), dropped=dropped, notes=notes)


def config_to_whisper(cfg: Any) -> dict[str, Any]:
    enc = cfg.encoder
    frontend = enc.frontend
    if not isinstance(frontend, WhisperFrontendConfig):
        raise ValueError(f"a Whisper folder needs Whisper's front-end; this model's is {frontend.kind!r}")
    return dict(
        architectures=[ARCHITECTURE],
        d_model=enc.dim,
        encoder_layers=enc.num_layers,
        encoder_attention_heads=enc.num_heads,
        encoder_ffn_dim=enc.ffn_dim,
        decoder_layers=enc.num_layers,  # the decoder is not ours: sized like the encoder
        decoder_attention_heads=enc.num_heads,
        decoder_ffn_dim=enc.ffn_dim,
        num_mel_bins=frontend.num_mels,
        max_source_positions=frontend.clip_samples // MEL_HOP // 2,
        activation_function="gelu",
        scale_embedding=False,
        dropout=enc.dropout,
        attention_dropout=enc.attention_dropout,
        activation_dropout=enc.activation_dropout,
        ssl_audio={"family": FAMILY, "config": to_dict(cfg)},
    )


def write_hf_whisper(cfg: Any, state: dict[str, Tensor], folder: Path) -> tuple[str, ...]:
    """config.json, model.safetensors, preprocessor_config.json; returns the parts of ours left out."""
    from transformers import WhisperConfig, WhisperFeatureExtractor

    folder.mkdir(parents=True)
    WhisperConfig(**config_to_whisper(cfg)).save_pretrained(folder)
    encoder_state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    theirs, _ = export(encoder_state, table())
    theirs = {k: v.detach().clone().contiguous() for k, v in theirs.items() if not k.endswith("self_attn.k_proj.bias")}
    theirs["encoder.embed_positions.weight"] = sinusoids(cfg.encoder.max_positions, cfg.encoder.dim)
    save_file(theirs, folder / "model.safetensors", metadata={"format": "pt"})
    WhisperFeatureExtractor(
        feature_size=cfg.encoder.frontend.num_mels, chunk_length=cfg.encoder.frontend.clip_samples // 16_000
    ).save_pretrained(folder)
    return tuple(sorted({k.split(".")[0] for k in state if not k.startswith("encoder.")}))
