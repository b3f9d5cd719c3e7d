"""Reading a step folder: verified against its meta.json, nothing unpickled as code.

    <run>/step_00001000/
        model.safetensors   weights (no pickled code can hide in safetensors)
        train_state.pt      optimizer, scheduler, scaler, per-rank RNG, sampler position, counters:
                            plain tensors and containers, read back with torch.load(weights_only=True)
        config.yaml         the resolved config
        meta.json           step, validation loss and the size and SHA-256 of every file; written last

A leaf, so that models/ can load what train/checkpoint.py writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

PREFIX = "step_"
MODEL_FILE, STATE_FILE, CONFIG_FILE, META_FILE = "model.safetensors", "train_state.pt", "config.yaml", "meta.json"
COMPILE_PREFIX = "_orig_mod."  # torch.compile's wrapper puts the model under this attribute


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the folder or file and the reason."""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    path: Path
    step: int
    val_loss: float | None
    model_state: dict[str, torch.Tensor]
    train_state: dict[str, Any]
    config_text: str


def strip_compile_prefix(state: dict[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """Keys as the plain model names them: `_orig_mod.` (torch.compile's wrapper, at any depth) removed."""
    stripped = {key.replace(COMPILE_PREFIX, ""): value for key, value in state.items()}
    if len(stripped) != len(state):
        both = sorted(k for k in state if COMPILE_PREFIX in k and k.replace(COMPILE_PREFIX, "") in state)
        raise CheckpointError(f"{source}: holds {both[0]!r} both with and without the torch.compile prefix")
    return stripped


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_meta(path: Path, *, verify: bool = True) -> dict:
    """meta.json of a checkpoint folder, after checking every file against it."""
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {META_FILE})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_path}: unreadable ({err})") from None
    if verify:
        for name, expected in meta.get("files", {}).items():
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"{file}: missing")
            if file.stat().st_size != expected["bytes"]:
                raise CheckpointError(f"{file}: truncated ({file.stat().st_size} of {expected['bytes']} bytes)")
            if _sha256(file) != expected["sha256"]:
                raise CheckpointError(f"{file}: corrupt (SHA-256 differs from {META_FILE})")
    return meta


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint folder. Nothing in it is unpickled as code."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder")
    meta = read_meta(path)
    try:
        model_state = strip_compile_prefix(load_file(path / MODEL_FILE), source=str(path / MODEL_FILE))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path / MODEL_FILE}: unreadable ({err})") from None
    try:
        train_state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses anything that is not plain data: say which file
        raise CheckpointError(f"{path / STATE_FILE}: refused or unreadable ({type(err).__name__}: {err})") from None
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        val_loss=meta.get("val_loss"),
        model_state=model_state,
        train_state=train_state,
        config_text=(path / CONFIG_FILE).read_text(encoding="utf-8"),
    )
