"""Step folders written by older code keep loading into the same model (tests/fixtures/make_checkpoints.py).

The fixtures were made at commit cdc133d, whose config.yaml held `model.config` as a delta over the preset: they
are migrated on read over the presets as they were then (models/legacy_presets.json), never over today's.
The hidden states were computed in float64; another CPU's summation order moves them by about n * 2.2e-16
relative (n <= 80 terms per dot product, a few layers deep: ~1e-13), so atol 1e-10 leaves a margin of 1000 while
any change of the built architecture or its weights moves them by far more than 1e-6.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_audio.models.loading import load_encoder, load_model, read_model_config
from ssl_audio.models.registry import FAMILIES, family_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"
FIXTURE_FAMILIES = ("wav2vec2", "hubert", "wavlm")


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _with_frontend_section(config: dict) -> dict:
    """The recorded config as today's schema names it: the conv facts moved from the encoder into its front-end,
    and fields added since at their defaults (HuBERT's label_window: 400, the 25 ms its labels always had, and
    label_offset: None, the model's own offset, which is how its labels were mapped)."""
    encoder = dict(config["encoder"])
    frontend = {"kind": "conv", "layers": encoder.pop("conv_layers"), "mode": encoder.pop("extractor_mode"),
                "bias": encoder.pop("conv_bias")}  # fmt: skip
    added = {"label_window": 400, "label_offset": None} if "label_rate" in config else {}
    # encoder fields added since, at the defaults that build the recorded model (conv positions, feature projection)
    encoder_added = {"positions": "conv", "max_positions": 1500, "feature_projection": True, "attend_padding": False}
    return {**config, **added, "encoder": {**encoder, "frontend": frontend, **encoder_added}}


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_fixture_builds_the_recorded_config(family: str) -> None:
    expected = json.loads((FIXTURES / family / "expected.json").read_text())
    model, _ = load_model(FIXTURES / family / "step_00000001")
    assert type(model.cfg).__name__ == expected["class"]
    assert _plain(dataclasses.asdict(model.cfg)) == _with_frontend_section(expected["config"])
    saved = load_file(FIXTURES / family / "step_00000001" / "model.safetensors")
    own = model.state_dict()
    assert own.keys() == saved.keys()
    assert all(torch.equal(own[k], saved[k]) for k in saved)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_fixture_hidden_states_unchanged(family: str) -> None:
    expected = load_file(FIXTURES / family / "expected.safetensors")
    encoder = load_encoder(FIXTURES / family / "step_00000001").double()
    with torch.no_grad():
        hidden = encoder(expected["waves"], expected["lengths"]).hidden_states
    layers = sorted(k for k in expected if k.startswith("hidden_"))
    assert len(hidden) == len(layers) == 2  # transformer input and the one layer
    for i, h in enumerate(hidden):
        torch.testing.assert_close(h, expected[f"hidden_{i}"], atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_fixture_ignores_todays_presets(monkeypatch: pytest.MonkeyPatch, family: str) -> None:
    """A preset changed after the checkpoint was written (pre_ln, dropout, label_rate) changes nothing it builds."""
    expected = json.loads((FIXTURES / family / "expected.json").read_text())
    tiny = FAMILIES[family].presets["tiny"]

    def changed() -> object:
        cfg = tiny()
        encoder = dataclasses.replace(cfg.encoder, pre_ln=not cfg.encoder.pre_ln, dropout=0.3)
        extra = {"label_rate": 25.0} if hasattr(cfg, "label_rate") else {}
        return dataclasses.replace(cfg, encoder=encoder, **extra)

    monkeypatch.setitem(FAMILIES[family].presets, "tiny", changed)
    model, _ = load_model(FIXTURES / family / "step_00000001")
    assert _plain(dataclasses.asdict(model.cfg)) == _with_frontend_section(expected["config"])
    read = read_model_config(FIXTURES / family / "step_00000001")
    assert _plain(dataclasses.asdict(family_config(read))) == _with_frontend_section(expected["config"])
    assert read.config == _with_frontend_section(expected["config"])  # migrated: every field spelled out
