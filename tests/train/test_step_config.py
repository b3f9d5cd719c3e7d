"""A step folder records the fully resolved model config: it builds the same model whatever later happens to the
presets, and resuming compares resolved model sections (an old folder's delta is migrated first)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from train_helpers import config, step_folders, wav2vec2_overrides

from ssl_audio.configs import parse_yaml, to_dict
from ssl_audio.models.loading import load_model, read_model_config
from ssl_audio.models.registry import FAMILIES, family_config, is_complete
from ssl_audio.models.wav2vec2 import Wav2Vec2Config
from ssl_audio.train.config import from_dict
from ssl_audio.train.loop import train
from ssl_audio.train.resume_changes import check_resume_changes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"


def test_step_folder_records_the_resolved_model(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(wav2vec2_overrides(corpus, tmp_path / "run", "train.max_updates=1", "model.config.num_negatives=7"))
    train(cfg)
    step = step_folders(tmp_path / "run")[-1]
    saved = yaml.safe_load((step / "config.yaml").read_text())["model"]
    resolved = family_config(cfg.model)
    assert saved["config"] == to_dict(resolved) and is_complete(saved["config"], Wav2Vec2Config)
    assert resolved.num_negatives == 7 and resolved.encoder.dim == 96  # the override and the tiny preset's width
    # The run folder keeps the config as given (a delta), as `pretrain --print-config` shows it.
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["config"]["num_negatives"] == 7

    tiny = FAMILIES["wav2vec2"].presets["tiny"]
    changed = lambda: dataclasses.replace(tiny(), encoder=dataclasses.replace(tiny().encoder, pre_ln=True))  # noqa: E731
    monkeypatch.setitem(FAMILIES["wav2vec2"].presets, "tiny", changed)
    model, model_cfg = load_model(step)
    assert model.cfg == resolved and not model.cfg.encoder.pre_ln
    assert read_model_config(step) == model_cfg


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_old_step_folder_resumes_with_its_own_config(family: str) -> None:
    """The fixture's config.yaml (a delta) against the same config read back: no change, once both are resolved."""
    text = (FIXTURES / family / "step_00000001" / "config.yaml").read_text()
    same = from_dict(parse_yaml(text))
    assert check_resume_changes(text, same, source="S") == []
    model = dataclasses.replace(same.model, config={**same.model.config, "final_dim": 9})
    changed = dataclasses.replace(same, model=model)
    with pytest.raises(ValueError, match=r"model\.config\.final_dim: 8 -> 9"):
        check_resume_changes(text, changed, source="S")
