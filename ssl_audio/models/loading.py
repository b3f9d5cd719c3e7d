"""Loading weights into a model, and a trained model back from a step folder (its config.yaml says what to build)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ssl_audio.configs import from_dict, parse_yaml, to_dict, yaml_reason
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.migrate import migrate_model_config
from ssl_audio.models.registry import FAMILIES, ModelConfig, build_model, is_complete, lay_over
from ssl_audio.step_folder import CONFIG_FILE, load_checkpoint, read_meta

# The presets as they were when step folders recorded `model.config` as a delta over them (commit cdc133d): a
# folder of then is laid over these, never over today's presets, so a later change of a preset (pre_ln, dropout,
# label_rate...) never changes what an old checkpoint builds. Frozen data: never edit the file.
LEGACY_PRESETS: dict[str, dict[str, dict[str, Any]]] = json.loads(
    resources.files("ssl_audio.models").joinpath("legacy_presets.json").read_text(encoding="utf-8")
)


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


def model_section(config_text: str, *, source: str) -> ModelConfig:
    """The model section of a step folder's config.yaml, fully resolved.

    Folders written before the resolved config was recorded hold `model.config` as a delta over the preset: it is
    laid over the preset as it was then (legacy_presets.json), never over today's."""
    try:
        values = parse_yaml(config_text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: config.yaml is not valid YAML ({yaml_reason(err)})") from None
    try:
        model = from_dict(values.get("model", {}) if isinstance(values, dict) else {}, schema=ModelConfig)
        family = FAMILIES[model.family]
        model = replace(model, config=migrate_model_config(model.config))
        if is_complete(model.config, family.config_class):
            return model
        legacy = LEGACY_PRESETS[model.family]
        if model.preset not in legacy:
            raise ValueError(f"config key 'model.preset': {model.family} had presets {sorted(legacy)}")
        values = migrate_model_config(lay_over(migrate_model_config(legacy[model.preset]), model.config))
        return replace(model, config=to_dict(from_dict(values, schema=family.config_class)))
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def read_model_config(step_dir: str | Path) -> ModelConfig:
    """What a step folder's model is (resolved, see model_section), without reading its weights.

    The one reader of a step folder's config.yaml: loading, probing, conversion and resuming all use it."""
    step_dir = Path(step_dir)
    read_meta(step_dir, verify=False)  # a clear error unless it is a complete checkpoint folder
    return model_section((step_dir / CONFIG_FILE).read_text(encoding="utf-8"), source=str(step_dir / CONFIG_FILE))


def load_model(path: str | Path) -> tuple[nn.Module, ModelConfig]:
    """The family model of a step folder, weights loaded, in eval mode; with the model section it was built from."""
    checkpoint = load_checkpoint(path)
    model_cfg = model_section(checkpoint.config_text, source=str(checkpoint.path / CONFIG_FILE))
    model = build_model(model_cfg)
    load_weights(model, checkpoint.model_state, source=str(checkpoint.path))
    return model.eval(), model_cfg


def load_encoder(path: str | Path) -> Encoder:
    """Just the trunk (extractor + transformer) of a step folder, in eval mode."""
    model, _ = load_model(path)
    return model.encoder.eval()
