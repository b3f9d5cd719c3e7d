"""Each spectrogram front-end's framing, measured: a small impulse at sample p changes exactly the frames whose
window [offset + t * hop, offset + t * hop + window) holds p (nn/frontend.py's framing contract)."""

from __future__ import annotations

import pytest
import torch

from ssl_audio.nn.logmel_frontend import LogMelFrontend, LogMelFrontendConfig
from ssl_audio.nn.patch_frontend import PatchFrontend, PatchFrontendConfig
from ssl_audio.nn.whisper_frontend import WhisperFrontend, WhisperFrontendConfig

IMPULSE_AT = 3300  # on no mel window's first sample (3300 + 200 is not a multiple of 160): the Hann weight is > 0


def changed_frames(frontend: torch.nn.Module, samples: int) -> list[int]:
    gen = torch.Generator().manual_seed(0)
    wave = 1e-3 * torch.randn(1, samples, generator=gen)
    t = torch.arange(samples - 1600, samples) / 16_000
    wave[0, -1600:] += torch.sin(2 * torch.pi * 440 * t)  # the clip's loudest frames: the log floor stays put
    bumped = wave.clone()
    bumped[0, IMPULSE_AT] += 0.05
    with torch.no_grad():
        a, _ = frontend(wave)
        b, _ = frontend(bumped)
    return torch.nonzero((a - b).abs().amax(dim=-1)[0] > 1e-6).flatten().tolist()


@pytest.mark.parametrize(
    ("build", "offset"),
    [
        (lambda: WhisperFrontend(WhisperFrontendConfig(width=8, clip="trim")), -520),  # centred: frame t on 320 t
        (lambda: LogMelFrontend(LogMelFrontendConfig(width=8)), 0),  # unpadded stems start at sample 0
        (lambda: LogMelFrontend(LogMelFrontendConfig(width=8, stem="conv2d", features="kaldi")), 0),
        (lambda: PatchFrontend(PatchFrontendConfig(dim=8, normalize="none")), 0),
    ],
)
def test_the_frames_an_impulse_reaches_follow_hop_window_and_offset(build, offset: int) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    frontend = build().eval()
    assert frontend.offset == offset
    hop, window = frontend.hop, frontend.window
    frames = frontend.output_lengths(torch.tensor([12_000])).item()
    expected = [t for t in range(frames) if offset + t * hop <= IMPULSE_AT < offset + t * hop + window]
    assert expected  # the impulse is inside the clip's frames
    assert changed_frames(frontend, 12_000) == expected
