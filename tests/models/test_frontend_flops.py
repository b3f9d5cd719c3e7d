"""FLOPs of the log-mel and patch front-ends (their configs' flops) against torch's FlopCounterMode."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ssl_audio.models.flops import forward_flops
from ssl_audio.models.hubert import Hubert, hubert_tiny
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wav2vec2 import Wav2Vec2, wav2vec2_tiny
from ssl_audio.nn.frontends import build_frontend
from ssl_audio.nn.logmel_frontend import LogMelFrontendConfig
from ssl_audio.nn.patch_frontend import PatchFrontendConfig

CONFIGS = {
    "whisper-80": LogMelFrontendConfig(width=48),
    "kaldi-128-conv2d": LogMelFrontendConfig(features="kaldi", num_mels=128, stem="conv2d", width=24),
    "whisper-128-conv2d-norm": LogMelFrontendConfig(num_mels=128, stem="conv2d", width=16, normalize="utterance"),
    "patch": PatchFrontendConfig(dim=64),
    "patch-whisper": PatchFrontendConfig(features="whisper", num_mels=80, dim=32),
}


def counted(call) -> float:  # noqa: ANN001
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("samples", [16_000, 40_123])
def test_frontend_flops_equal_the_counted_products(name: str, samples: int) -> None:
    cfg = CONFIGS[name]
    frontend = build_frontend(cfg)
    wave = torch.randn(1, samples)
    with torch.no_grad():
        total = counted(lambda: frontend(wave, torch.tensor([samples])))
        frames = frontend(wave)[0].shape[1]
    analytic, analytic_frames = cfg.flops(samples)
    assert analytic_frames == frames
    assert analytic == pytest.approx(total, rel=1e-9)  # the same products; a missing term would be >= 1 %


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("name", ["whisper-80", "patch"])
def test_model_forward_flops_with_a_spectral_front_end(family: str, name: str) -> None:
    samples = 32_000
    base = hubert_tiny() if family == "hubert" else wav2vec2_tiny()
    cfg = replace(base, encoder=replace(base.encoder, frontend=CONFIGS[name]))
    torch.manual_seed(0)
    wave, lengths = torch.randn(1, samples), torch.tensor([samples])
    context = StepContext(generator=torch.Generator().manual_seed(1))
    if family == "hubert":
        model = Hubert(cfg).train()
        labels = [torch.randint(0, n, (1, (samples - 400) // 160 + 1)) for n in cfg.num_classes]
        call = lambda: model(wave, lengths, labels, context=context)  # noqa: E731
    else:
        model = Wav2Vec2(cfg).train()
        call = lambda: model(wave, lengths, context=context)  # noqa: E731
    counter = FlopCounterMode(display=False)
    with counter:
        out = call()
    masked = float(out.metrics["masked_frames"])
    assert forward_flops(cfg, [samples], masked_frames=masked) == pytest.approx(counter.get_total_flops(), rel=1e-6)
