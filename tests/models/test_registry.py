"""The family records own what the loop used to special-case: inputs, label shapes, chance, fresh parts, metric."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import ssl_audio.train.loop
from ssl_audio.models.registry import FAMILIES, LabelShapes, ModelConfig, build_model, family_config
from ssl_audio.models.step_context import StepContext

TINY_CHANGES = {"encoder": {"num_layers": 1, "dropout": 0.0, "attention_dropout": 0.0, "projection_dropout": 0.0}}


@dataclass
class FakeBatch:
    waves: torch.Tensor
    lengths: torch.Tensor
    labels: tuple[torch.Tensor, ...] = ()


def test_loop_names_no_family() -> None:
    source = Path(ssl_audio.train.loop.__file__).read_text()
    assert not re.search(r"wav2vec2|hubert|wavlm|HuBERT|WavLM", source, flags=re.IGNORECASE)
    assert "isinstance" not in source


PRETRAINING = sorted(set(FAMILIES) - {"finetune"})  # fine-tuning's record: tests/finetune/test_family.py


@pytest.mark.parametrize("name", PRETRAINING)
def test_record_matches_its_model(name: str) -> None:
    family = FAMILIES[name]
    shapes = LabelShapes(num_classes=(5, 3), rate=50.0)
    model_cfg = family.resolve(ModelConfig(family=name, preset="tiny", config=TINY_CHANGES), lambda: shapes)
    cfg = family_config(model_cfg)
    torch.manual_seed(0)
    model = build_model(model_cfg).eval()
    keys = model.state_dict().keys()
    for parts in family.fresh_parts.values():  # every part that may start fresh names real parameters
        assert parts and all(any(k.startswith(p) for k in keys) for p in parts)
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    labels = (torch.randint(0, 3, (2, 25)), torch.randint(0, 3, (2, 25)))
    with torch.no_grad():
        out = model(**family.inputs(FakeBatch(waves, torch.tensor([8000, 6000]), labels)), context=StepContext(step=0))
    assert family.accuracy_key in out.metrics
    if name == "wav2vec2":
        assert family.chance(cfg) == 1 / 21  # tiny: 20 negatives
        assert family.perplexity_floor(cfg, 0.5) == 0.5 * 2 * 64  # tiny: G=2 x V=64
        assert model_cfg.config == TINY_CHANGES  # nothing taken from the labels
    elif name == "bestrq":
        assert family.chance(cfg) == 1 / 256  # tiny: V=256
        assert family.perplexity_floor(cfg, 0.5) is None  # a frozen quantiser cannot collapse
        assert model_cfg.config == TINY_CHANGES
    else:
        assert cfg.num_classes == (5, 3) and cfg.label_rate == 50.0
        assert family.chance(cfg) == 1 / 5  # the largest label set
        assert family.perplexity_floor(cfg, 0.5) is None


@pytest.mark.parametrize("name", ["hubert", "wavlm"])
def test_labelled_families_refuse_missing_labels(name: str) -> None:
    family = FAMILIES[name]
    with pytest.raises(ValueError, match=f"model.family={name} needs data.train_labels"):
        family.resolve(ModelConfig(family=name, preset="tiny"), lambda: None)
    with pytest.raises(ValueError, match=f"{name} needs frame labels"):
        family.inputs(FakeBatch(torch.zeros(1, 400), torch.tensor([400])))


def _internal_imports(path: Path) -> set[str]:
    """Every ssl_audio module `path` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssl_audio"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ssl_audio"))
    return found


def test_models_and_nn_import_nothing_uphill() -> None:
    package = Path(ssl_audio.train.loop.__file__).resolve().parents[1]
    uphill = ("data", "train", "cluster", "probe", "interop", "cli", "demo")
    bad = {
        f"{path.relative_to(package)} -> {module}"
        for folder in ("models", "nn")
        for path in (package / folder).glob("*.py")
        for module in _internal_imports(path)
        if module.split(".")[1] in uphill
    }
    assert not bad
    assert _internal_imports(package / "configs.py") == {"ssl_audio.checks"}  # the loader is a leaf
