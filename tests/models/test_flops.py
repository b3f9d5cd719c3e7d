"""Analytic FLOPs against torch's own FlopCounterMode on real forward and backward passes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ssl_audio.models.bestrq import BestRq, bestrq_tiny
from ssl_audio.models.flops import forward_flops, training_flops
from ssl_audio.models.hubert import Hubert, hubert_tiny
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wav2vec2 import Wav2Vec2, tiny_encoder, wav2vec2_tiny
from ssl_audio.models.wavlm import wavlm_tiny
from ssl_audio.nn.conv_extractor import BASE_CONV_LAYERS, ConvFrontendConfig

# A trunk with the BASE extractor and two narrow layers: the conv stack's share is as in BASE, and it runs fast.
BASE_FRONT = tiny_encoder(
    frontend=ConvFrontendConfig(layers=BASE_CONV_LAYERS), dim=192, num_heads=4, ffn_dim=768, num_layers=2
)


def configs() -> dict[str, object]:
    return {
        "wav2vec2": wav2vec2_tiny(),
        "wav2vec2-base-front": replace(wav2vec2_tiny(), encoder=BASE_FRONT),
        "hubert": hubert_tiny(num_classes=(50, 20)),
        "hubert-tied": replace(hubert_tiny(), untie_final_proj=False),
        "wavlm": wavlm_tiny(),
        "hubert-base-front": replace(hubert_tiny(), encoder=BASE_FRONT),
        "bestrq": replace(bestrq_tiny(), num_codebooks=2),
    }


def run(cfg: object, samples: int, *, backward: bool) -> tuple[float, float]:
    """Counted FLOPs of one utterance's forward (and backward), and the masked-frame count it used."""
    torch.manual_seed(0)
    wave = torch.randn(1, samples)
    lengths = torch.tensor([samples])
    generator = torch.Generator().manual_seed(1)
    if isinstance(cfg, type(bestrq_tiny())):
        model = BestRq(cfg).train()
        call = lambda: model(wave, lengths, context=StepContext(generator=generator))  # noqa: E731
    elif isinstance(cfg, type(wav2vec2_tiny())):
        model = Wav2Vec2(cfg).train()
        call = lambda: model(wave, lengths, context=StepContext(generator=generator))  # noqa: E731
    else:
        model = Hubert(cfg).train()
        frames = int(samples / 16_000 * cfg.label_rate)
        labels = [torch.randint(0, n, (1, frames)) for n in cfg.num_classes]
        call = lambda: model(wave, lengths, labels, context=StepContext(generator=generator))  # noqa: E731
    counter = FlopCounterMode(display=False)
    with counter:
        out = call()
        if backward:
            out.loss.backward()
    masked = out.sample_size if isinstance(cfg, type(bestrq_tiny())) else out.metrics["masked_frames"]  # head's rows
    return float(counter.get_total_flops()), float(masked)


# Odd lengths check the frame arithmetic; the BASE-extractor cases once each (they are the slow ones).
CASES = [
    (name, samples) for name in configs() for samples in (16_000, 40_123) if "base" not in name or samples > 20_000
]


@pytest.mark.parametrize(("name", "samples"), CASES)
def test_forward_flops_equal_the_counted_products(name: str, samples: int) -> None:
    cfg = configs()[name]
    counted, masked = run(cfg, samples, backward=False)
    analytic = forward_flops(cfg, [samples], masked_frames=masked)
    # Both count the same products; any gap is a missing or doubled term (the smallest, the WavLM gate, is ~1 %).
    assert analytic == pytest.approx(counted, rel=1e-6)


@pytest.mark.parametrize("name", ["wav2vec2", "hubert", "wavlm", "hubert-base-front"])
def test_training_flops_within_five_percent_of_forward_and_backward(name: str) -> None:
    cfg = configs()[name]
    counted, masked = run(cfg, 32_000, backward=True)
    assert training_flops(cfg, [32_000], masked_frames=masked) == pytest.approx(counted, rel=0.05)


def test_a_batch_counts_each_utterance_at_its_own_length() -> None:
    cfg = hubert_tiny()
    assert forward_flops(cfg, [16_000, 48_000]) == pytest.approx(
        forward_flops(cfg, [16_000]) + forward_flops(cfg, [48_000])
    )
