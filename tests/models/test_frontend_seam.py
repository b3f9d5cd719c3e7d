"""The front-end seam: the encoder builds or receives its front-end, others ask it for hop/window/min_samples,
and old model sections (conv facts on the encoder) still read as today's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from ssl_audio.configs import from_dict
from ssl_audio.data.manifest import Manifest
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.migrate import migrate_model_config
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.nn.conv_extractor import ConvFeatureExtractor, ConvFrontendConfig
from ssl_audio.train.loop import check_input_lengths

TINY_LAYERS = ((8, 10, 5),) + ((8, 3, 2),) * 4 + ((8, 2, 2),) * 2


def test_injected_frontend_is_the_one_used() -> None:
    frontend = ConvFeatureExtractor(tiny_encoder().frontend.layers)
    encoder = Encoder(tiny_encoder(), frontend=frontend)
    assert encoder.extractor is frontend and encoder.frontend is frontend
    assert any(k.startswith("extractor.blocks.0.conv") for k in encoder.state_dict())  # keys as before the seam


def test_injected_frontend_must_frame_as_the_config_says() -> None:
    other = ConvFeatureExtractor(((8, 10, 5),) + ((8, 3, 2),) * 4 + ((8, 2, 2),))  # hop 160, window 240
    with pytest.raises(ValueError, match="hop 160, window 240; the config says hop 320, window 400"):
        Encoder(tiny_encoder(), frontend=other)


def test_encoder_framing_by_hand() -> None:
    # window by hand: 10 + 2*5 + 2*10 + 2*20 + 2*40 + 1*80 + 1*160 = 400; hop: 5 * 2^6 = 320
    cfg = ConvFrontendConfig(layers=TINY_LAYERS)
    assert (cfg.hop, cfg.window, cfg.out_channels) == (320, 400, 8)
    encoder = Encoder(tiny_encoder(frontend=cfg))
    assert (encoder.hop, encoder.window, encoder.min_samples) == (320, 400, 400)
    out = encoder.eval()(torch.zeros(1, 400 + 320 * 3))
    assert out.last.shape[1] == 4


def test_old_conv_keys_move_into_the_frontend() -> None:
    old = {"encoder": {"conv_layers": [[8, 10, 5]], "extractor_mode": "layer_norm", "conv_bias": True, "dim": 16},
           "final_dim": 4}  # fmt: skip
    assert migrate_model_config(old) == {
        "encoder": {
            "dim": 16,
            "frontend": {"kind": "conv", "layers": [[8, 10, 5]], "mode": "layer_norm", "bias": True},
        },
        "final_dim": 4,
    }
    today = {"encoder": {"frontend": {"layers": [[8, 10, 5]]}}}
    assert migrate_model_config(today) == today
    with pytest.raises(ValueError, match="'encoder.conv_bias' is the old name of 'encoder.frontend.bias'"):
        migrate_model_config({"encoder": {"conv_bias": True, "frontend": {}}})


def test_a_recipe_with_old_keys_builds_the_same_model() -> None:
    layers = [list(layer) for layer in TINY_LAYERS]
    old = ModelConfig(family="hubert", preset="tiny", config={"encoder": {"conv_layers": layers, "conv_bias": True}})
    new = ModelConfig(
        family="hubert", preset="tiny", config={"encoder": {"frontend": {"layers": layers, "bias": True}}}
    )
    assert family_config(old) == family_config(new)
    assert family_config(new).encoder.frontend == ConvFrontendConfig(layers=TINY_LAYERS, bias=True)


@dataclass(frozen=True, kw_only=True)
class _A:
    kind: Literal["a"] = "a"
    x: int = 1


@dataclass(frozen=True, kw_only=True)
class _B:
    kind: Literal["b"] = "b"
    y: float = 2.0


@dataclass(frozen=True, kw_only=True)
class _Holder:
    part: _A | _B = _A()


def test_tagged_union_dispatches_on_kind() -> None:
    assert from_dict({"part": {"x": 3}}, schema=_Holder).part == _A(x=3)  # no kind: the first
    assert from_dict({"part": {"kind": "b", "y": 5}}, schema=_Holder).part == _B(y=5.0)
    with pytest.raises(ValueError, match=r"unknown config key 'part.x'; _B has: kind, y"):
        from_dict({"part": {"kind": "b", "x": 5}}, schema=_Holder)  # the error names the chosen class's keys
    with pytest.raises(ValueError, match=r"config key 'part.kind': 'c' is not one of \['a', 'b'\]"):
        from_dict({"part": {"kind": "c"}}, schema=_Holder)


def test_training_refuses_inputs_shorter_than_a_frame(tmp_path) -> None:
    manifest = Manifest(root=tmp_path, paths=("a.wav", "b.wav"), num_samples=(3000, 2000))
    check_input_lengths(400, 250_000, [manifest, None])  # the conv stack: the data's own floor suffices
    with pytest.raises(ValueError, match=r"'data.max_samples': 2000 is shorter than one frame .* \(2560 samples\)"):
        check_input_lengths(2560, 2000, [manifest])
    with pytest.raises(
        ValueError, match=r"b.wav: 2000 samples, fewer than one frame of the model's front-end \(2560\)"
    ):
        check_input_lengths(2560, 250_000, [manifest])
