"""tools/bench: each implementation's builder makes the model of the ssl_audio preset it claims to mirror."""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.interop.torchaudio import config_from_torchaudio
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.hubert import Hubert, hubert_base, hubert_tiny
from ssl_audio.models.wav2vec2 import Wav2Vec2, tiny_encoder, wav2vec2_base, wav2vec2_tiny
from tools.bench import ours, torchaudio_ref, transformers_ref
from tools.bench.common import make_batch, no_layerdrop

TINY_ENCODER = no_layerdrop(tiny_encoder())
# Labels one per frame, as the benchmark batch holds them.
TINY_HUBERT = no_layerdrop(replace(hubert_tiny(), label_rate=SAMPLE_RATE / TINY_ENCODER.hop))
TINY_WAV2VEC2 = no_layerdrop(wav2vec2_tiny())
TINY = {
    "wav2vec2": (TINY_WAV2VEC2, Wav2Vec2),
    "hubert": (TINY_HUBERT, Hubert),
    "trunk": (TINY_ENCODER, Encoder),
}
SLOW = pytest.mark.slow  # importing transformers
BUILDERS = [
    pytest.param("wav2vec2", ours.build_wav2vec2, id="wav2vec2-ours"),
    pytest.param("wav2vec2", transformers_ref.build_wav2vec2, id="wav2vec2-transformers", marks=SLOW),
    pytest.param("hubert", ours.build_hubert, id="hubert-ours"),
    pytest.param("hubert", torchaudio_ref.build_hubert, id="hubert-torchaudio"),
    pytest.param("hubert", transformers_ref.build_hubert, id="hubert-transformers", marks=SLOW),
    pytest.param("trunk", ours.build_trunk, id="trunk-ours"),
    pytest.param("trunk", torchaudio_ref.build_trunk, id="trunk-torchaudio"),
    pytest.param("trunk", transformers_ref.build_trunk, id="trunk-transformers", marks=SLOW),
]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("family", "build"), BUILDERS)
def test_builder_mirrors_our_tiny_preset_and_steps(family, build):
    """Tiny presets differ from every library default (widths, conv layers, kernel, groups, codebook, final dim),
    so a constant that a builder restated instead of reading off the config would change the count."""
    if build.__module__.endswith("transformers_ref"):
        pytest.importorskip("transformers")  # a dev extra
    cfg, ours_class = TINY[family]
    batch = make_batch(TINY_ENCODER, batch=2, samples=SAMPLE_RATE, num_classes=TINY_HUBERT.num_classes[0])
    torch.manual_seed(0)
    model, loss_fn, prepare = build(cfg, batch)
    assert count(model) == count(ours_class(cfg))
    if build.__module__.endswith("torchaudio_ref"):
        encoder = cfg.encoder if family == "hubert" else cfg
        assert config_from_torchaudio(model) == encoder  # read back off the built modules, dropouts included
    model.train()
    loss = loss_fn(0, prepare(0) if prepare is not None else None)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.slow  # builds BASE models on the CPU
def test_base_builders_match_the_libraries_own_base_factories():
    """At BASE, our presets through the builders give the parameter counts of torchaudio's hubert_pretrain_base
    and wav2vec2_base (its own constants) and of transformers' default configs."""
    import torchaudio

    pytest.importorskip("transformers")
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model

    hubert, wav2vec2 = no_layerdrop(hubert_base()), no_layerdrop(wav2vec2_base())
    with torch.device("meta"):  # no weights needed to count them (torchaudio's HuBERT init cannot run on meta)
        trunk = count(torchaudio.models.wav2vec2_base())
        assert count(torchaudio_ref.wav2vec2_model(hubert.encoder)) == trunk
        assert count(Encoder(hubert.encoder)) == trunk
        hf_fields = transformers_ref.hf_fields
        assert count(Wav2Vec2ForPreTraining(Wav2Vec2Config())) == count(
            Wav2Vec2ForPreTraining(Wav2Vec2Config(**hf_fields("wav2vec2", wav2vec2, wav2vec2.masking)))
        )
        assert count(Wav2Vec2Model(Wav2Vec2Config(mask_time_prob=0.0))) == count(
            Wav2Vec2Model(Wav2Vec2Config(**hf_fields("wav2vec2", wav2vec2, None)))
        )
        ours_hubert = count(Hubert(hubert))
    assert count(torchaudio.models.hubert_pretrain_base(num_classes=500)) == ours_hubert
    assert count(torchaudio_ref.hubert_model(hubert)) == ours_hubert


@pytest.mark.slow  # bf16 autocast on a CPU without bf16 units
def test_gpu_step_script_steps_our_models(monkeypatch, capsys):
    """tools/benchmark_gpu_step.py steps the models through the shared builders (it used to pass a `step=`
    keyword our forwards no longer take); its table, run on the CPU with the tiny presets, has one finite row
    per model and precision."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))  # as `python tools/...` does
    gpu_step = importlib.import_module("benchmark_gpu_step")
    gpu_step.run(torch.device("cpu"), 2, 0.5, steps=1, warmup=0, w2v=TINY_WAV2VEC2, hub=TINY_HUBERT)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and " ms |" in line]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| wav2vec2 BASE", "fp32"],
        ["| HuBERT BASE", "fp32"],
        ["| wav2vec2 BASE", "bf16 autocast"],
        ["| HuBERT BASE", "bf16 autocast"],
    ]
    assert all(float(row.split(" | ")[2].removesuffix(" ms")) > 0 for row in rows)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_frontends_flag_builds_each_front_end_and_steps(family, monkeypatch):
    """--frontends: each front-end of FRONTENDS swapped into a family config gives a model with that front-end
    that steps (here on the tiny trunk, so the BASE-wide front-ends run in a fraction of a second)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    step = importlib.import_module("benchmark_step")
    cfg = TINY[family][0]
    batch = make_batch(TINY_ENCODER, batch=1, samples=SAMPLE_RATE, num_classes=TINY_HUBERT.num_classes[0])
    build = ours.build_wav2vec2 if family == "wav2vec2" else ours.build_hubert
    for frontend in step.FRONTENDS.values():
        model, loss_fn, _ = build(step.with_frontend(cfg, frontend), batch)
        assert model.encoder.extractor.out_channels == frontend.out_channels
        assert model.encoder.hop == frontend.hop
        loss = loss_fn(0, None)
        loss.backward()
        assert torch.isfinite(loss)
