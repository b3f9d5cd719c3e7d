"""Loading weights into a model, and a trained model back from a step folder (its config.yaml says what to build)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from torch import nn

from ssl_audio.configs import from_dict
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.registry import ModelConfig, build_model
from ssl_audio.step_folder import load_checkpoint


def check_compatible(
    expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], *, source: str, skip: Sequence[str] = ()
) -> None:
    """Raise ValueError listing every missing, unexpected or reshaped parameter (except `skip` prefixes)."""
    wanted = {k: v for k, v in expected.items() if not k.startswith(tuple(skip))}
    missing = sorted(set(wanted) - set(loaded))
    unexpected = sorted(k for k in set(loaded) - set(expected) if not k.startswith(tuple(skip)))
    reshaped = sorted(
        f"{k} {tuple(loaded[k].shape)} vs {tuple(v.shape)}"
        for k, v in wanted.items()
        if k in loaded and loaded[k].shape != v.shape
    )
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch (checkpoint vs model)", reshaped),
    ):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError(f"{source} does not fit this model's architecture; " + "; ".join(problems))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, skip: Sequence[str] = ()) -> None:
    """Copy `state` into `model` after check_compatible; parameters under `skip` keep their fresh values."""
    own = model.state_dict()
    check_compatible(own, state, source=source, skip=skip)
    kept = {k: v for k, v in state.items() if k in own and not k.startswith(tuple(skip))}
    model.load_state_dict({**own, **kept})


def load_model(path: str | Path) -> tuple[nn.Module, ModelConfig]:
    """The family model of a step folder, weights loaded, in eval mode; with the model section it was built from."""
    checkpoint = load_checkpoint(path)
    model_cfg = from_dict((yaml.safe_load(checkpoint.config_text) or {}).get("model", {}), schema=ModelConfig)
    model = build_model(model_cfg)
    load_weights(model, checkpoint.model_state, source=str(checkpoint.path))
    return model.eval(), model_cfg


def load_encoder(path: str | Path) -> Encoder:
    """Just the trunk (extractor + transformer) of a step folder, in eval mode."""
    model, _ = load_model(path)
    return model.encoder.eval()
