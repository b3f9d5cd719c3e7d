"""The fine-tuning family record: vocabulary from the targets, metrics and best-checkpoint choice by head."""

from __future__ import annotations

import pytest

from ssl_audio.models.registry import FAMILIES, LabelShapes, ModelConfig, build_model, family_config

FAMILY = FAMILIES["finetune"]
VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "|", "A", "B")


def test_vocab_comes_from_the_targets() -> None:
    shapes = LabelShapes(num_classes=(len(VOCAB),), rate=0.0, vocab=VOCAB)
    model = FAMILY.resolve(ModelConfig(family="finetune", preset="tiny"), lambda: shapes)
    assert tuple(family_config(model).vocab) == VOCAB
    with pytest.raises(ValueError, match="needs targets: set finetune.train"):
        FAMILY.resolve(ModelConfig(family="finetune", preset="tiny"), lambda: None)
    other = ModelConfig(family="finetune", preset="tiny", config={"vocab": ["<pad>", "X"]})
    with pytest.raises(ValueError, match="model.config.vocab"):
        FAMILY.resolve(other, lambda: shapes)


@pytest.mark.parametrize(
    ("changes", "best", "chance"),
    [
        ({}, ("cer", False), 0.0),
        ({"head": "seq2seq"}, ("cer", False), 0.0),
        ({"head": "classify"}, ("accuracy", True), 1 / len(VOCAB)),
        ({"head": "classify", "multilabel": True}, ("macro_f1", True), 1 / len(VOCAB)),
    ],
)
def test_record_by_head(changes: dict, best: tuple[str, bool], chance: float) -> None:
    model_cfg = ModelConfig(family="finetune", preset="tiny", config={"vocab": list(VOCAB), **changes})
    cfg = family_config(model_cfg)
    assert FAMILY.best_metric(cfg) == best and FAMILY.chance(cfg) == chance
    assert FAMILY.unused_parameters(cfg)  # frozen parts leave parameters without gradients: DDP must know
    keys = build_model(model_cfg).state_dict().keys()
    assert all(any(k.startswith(p) for k in keys) for p in FAMILY.init_keeps)
    assert "head.proj.weight" in keys


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="trainable_layers"):
        family_config(
            ModelConfig(family="finetune", preset="tiny", config={"vocab": list(VOCAB), "trainable_layers": 9})
        )
    with pytest.raises(ValueError, match="head"):
        family_config(ModelConfig(family="finetune", preset="tiny", config={"vocab": list(VOCAB), "head": "rnnt"}))
