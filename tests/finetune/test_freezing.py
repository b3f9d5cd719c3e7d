"""Selective unfreezing by no_grad inside forward: frozen parameters stay bit-identical while every parameter is
in the optimizer, and start changing at the unfreeze point."""

from __future__ import annotations

import pytest
import torch

from ssl_audio.models.finetune import FineTune
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.models.step_context import StepContext
from ssl_audio.train.loop import param_groups

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C"]


def tiny(**changes) -> FineTune:
    config = {"vocab": VOCAB, "encoder": {"num_layers": 2}, **changes}
    torch.manual_seed(0)
    return FineTune(family_config(ModelConfig(family="finetune", preset="tiny", config=config)))


def batch(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(2, 16000, generator=g) * 0.1
    targets = torch.tensor([[5, 6, 4, 7], [6, 5, -100, -100]])
    return {"wave": wave, "lengths": torch.tensor([16000, 12000]), "labels": [targets]}


def run(model: FineTune, steps: range) -> list[dict[str, torch.Tensor]]:
    """AdamW over every parameter (as the loop builds it); the weights after each update."""
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-3)
    model.train()
    states = []
    for step in steps:
        out = model(**batch(step), context=StepContext(step=step, generator=torch.Generator().manual_seed(step)))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]


def test_every_parameter_is_in_the_optimizer() -> None:
    model = tiny()
    groups = param_groups(model, 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_encoder_frozen_for_the_first_updates_then_trains() -> None:
    model = tiny(freeze_updates=2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    states = run(model, range(4))
    for i in (0, 1):  # updates 1 and 2: only the head moves
        assert not any(changed(start, states[i], "encoder.")), f"update {i + 1}"
        assert not any(changed(start, states[i], "masker."))
        assert all(changed(start, states[i], "head."))
    unfrozen = states[3]
    assert all(changed(states[1], unfrozen, "encoder.transformer.layers."))
    assert all(changed(states[1], unfrozen, "encoder.projection."))
    assert not any(changed(start, unfrozen, "encoder.extractor."))  # the front-end stays frozen by default


def test_only_the_top_layers_train() -> None:
    model = tiny(trainable_layers=1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after = run(model, range(2))[-1]
    assert all(changed(start, after, "encoder.transformer.layers.1."))
    for frozen in ("encoder.transformer.layers.0.", "encoder.transformer.positional.", "encoder.projection.",
                   "encoder.extractor.", "encoder.transformer.norm."):  # fmt: skip
        assert not any(changed(start, after, frozen)), frozen


@pytest.mark.parametrize("freeze_frontend", [False, True])
def test_front_end_trains_only_when_asked(freeze_frontend: bool) -> None:
    model = tiny(freeze_frontend=freeze_frontend)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after = run(model, range(1))[-1]
    assert any(changed(start, after, "encoder.extractor.")) == (not freeze_frontend)


def test_frozen_probe_trains_only_the_head() -> None:
    model = tiny(trainable_layers=0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after = run(model, range(1))[-1]
    assert not any(changed(start, after, "encoder.")) and all(changed(start, after, "head."))
