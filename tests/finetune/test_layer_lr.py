"""Layer-wise learning-rate decay and the head's rate, by hand: layer l of L at lr * decay^(L - l)."""

from __future__ import annotations

import pytest
import torch

from ssl_audio.models.finetune import FineTune
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.train.loop import param_groups
from ssl_audio.train.param_groups import layer_of, lr_scales

VOCAB = ["<pad>", "|", "A", "B"]


def model(pre_ln: bool = False) -> FineTune:
    config = {"vocab": VOCAB, "encoder": {"num_layers": 3, "pre_ln": pre_ln}}
    return FineTune(family_config(ModelConfig(family="finetune", preset="tiny", config=config)))


@pytest.mark.parametrize("pre_ln", [False, True])
def test_rates_by_hand(pre_ln: bool) -> None:
    net = model(pre_ln)
    lr, decay, head_lr = 1e-3, 0.5, 4e-3
    scales = lr_scales(net, num_layers=3, pre_ln=pre_ln, layer_decay=decay, head_scale=head_lr / lr)
    rate_of = {}
    for group in param_groups(net, 0.01, lr=lr, scales=scales):
        for p in group["params"]:
            rate_of[id(p)] = group.get("lr", lr)
    named = dict(net.named_parameters())
    expected = {
        "encoder.extractor.blocks.0.conv.weight": 1e-3 * 0.125,  # layer 0: 0.5^3
        "encoder.projection.linear.weight": 1e-3 * 0.125,
        "encoder.transformer.positional.conv.bias": 1e-3 * 0.125,
        "masker.mask_embedding": 1e-3 * 0.125,
        "encoder.transformer.layers.0.attention.out.weight": 1e-3 * 0.25,  # layer 1: 0.5^2
        "encoder.transformer.layers.1.feed_forward.fc2.bias": 1e-3 * 0.5,  # layer 2
        "encoder.transformer.layers.2.ffn_norm.weight": 1e-3,  # layer 3 = L: the full rate
        "encoder.transformer.norm.weight": 1e-3 if pre_ln else 1e-3 * 0.125,  # after the last layer / at the input
        "head.proj.weight": 4e-3,
        "head.proj.bias": 4e-3,
    }
    for name, rate in expected.items():
        assert name in named, sorted(named)
        assert rate_of[id(named[name])] == pytest.approx(rate, rel=1e-15), name
    assert len(rate_of) == len(named)  # every parameter is in exactly one group


def test_no_decay_keeps_the_two_groups_of_old() -> None:
    net = model()
    scales = lr_scales(net, num_layers=3, pre_ln=False, layer_decay=1.0, head_scale=1.0)
    groups = param_groups(net, 0.01, lr=1e-3, scales=scales)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0] and all("lr" not in g for g in groups)


def test_the_schedule_scales_every_group() -> None:
    net = model()
    scales = lr_scales(net, num_layers=3, pre_ln=False, layer_decay=0.5, head_scale=2.0)
    optimizer = torch.optim.AdamW(param_groups(net, 0.0, lr=1e-3, scales=scales), lr=1e-3)
    before = [g["lr"] for g in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 * r for r in before])
    del scheduler


def test_layer_of_heads_is_none() -> None:
    assert layer_of("head.proj.weight", num_layers=12, pre_ln=False) is None
    assert layer_of("encoder.transformer.layers.11.x", num_layers=12, pre_ln=False) == 12
