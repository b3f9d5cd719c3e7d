"""Model sections written by earlier versions, read as today's: a step folder never stops loading.

Each step is a pure function on the `model.config` mapping, applied in order on read (and to recipes, so an
old recipe keeps working); a config already in today's form passes through unchanged.
"""

from __future__ import annotations

from typing import Any

# Until the front-end seam, the conv stack's facts were fields of the encoder config itself.
_CONV_KEYS = {"conv_layers": "layers", "extractor_mode": "mode", "conv_bias": "bias"}


def _frontend_section(encoder: dict[str, Any]) -> dict[str, Any]:
    """encoder.{conv_layers, extractor_mode, conv_bias} -> encoder.frontend {kind: conv, layers, mode, bias}."""
    if not any(key in encoder for key in _CONV_KEYS):
        return encoder
    if "frontend" in encoder:
        old = sorted(key for key in _CONV_KEYS if key in encoder)
        raise ValueError(f"config key 'encoder.{old[0]}' is the old name of 'encoder.frontend.{_CONV_KEYS[old[0]]}'; "
                         "give one of them")  # fmt: skip
    moved = {new: encoder[old] for old, new in _CONV_KEYS.items() if old in encoder}
    rest = {key: value for key, value in encoder.items() if key not in _CONV_KEYS}
    return {**rest, "frontend": {"kind": "conv", **moved}}


def migrate_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """A family config mapping (what `model.config` holds) in today's form."""
    encoder = config.get("encoder")
    if not isinstance(encoder, dict):
        return config
    return {**config, "encoder": _frontend_section(encoder)}
