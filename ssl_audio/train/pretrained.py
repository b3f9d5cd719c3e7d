"""Load a trained model back from a checkpoint folder: its config.yaml says what to build."""

from __future__ import annotations

from pathlib import Path

import yaml
from torch import nn

from ssl_audio.models.encoder import Encoder
from ssl_audio.train.checkpoint import load_checkpoint
from ssl_audio.train.config import Config, from_dict
from ssl_audio.train.families import build_model
from ssl_audio.train.weights import load_weights


def load_model(path: str | Path) -> tuple[nn.Module, Config]:
    """The family model of a step folder, weights loaded, in eval mode."""
    checkpoint = load_checkpoint(path)
    cfg = from_dict(yaml.safe_load(checkpoint.config_text) or {})
    model = build_model(cfg.model)
    load_weights(model, checkpoint.model_state, source=str(checkpoint.path))
    return model.eval(), cfg


def load_encoder(path: str | Path) -> Encoder:
    """Just the trunk (extractor + transformer) of a step folder, in eval mode."""
    model, _ = load_model(path)
    return model.encoder.eval()
