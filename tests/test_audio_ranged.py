"""AudioSource.read and measure_audio against the whole-file `load_audio` they must reproduce."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE, AudioError, _resampler, load_audio, loudness
from ssl_audio.audio_spans import AudioSource, LoudnessMeter, _groups, measure_audio
from ssl_audio.loudness import BLOCK_STEPS, BLOCKS_PER_SECOND

RATES = [16_000, 8000, 44_100, 48_000]
SPAN = 16_000  # samples at 16 kHz: a 1 s crop
U32, U64 = 2.0**-24, 2.0**-53  # unit roundoff of float32 and float64


def write_noise(path, rate: int, channels: int, seconds: float, seed: int = 0, subtype: str = "FLOAT") -> None:
    rng = np.random.default_rng(seed)
    data = (0.3 * rng.standard_normal((round(rate * seconds), channels))).astype(np.float32)
    sf.write(path, data, rate, subtype=subtype)


def resampler_bound(rate: int, wave: torch.Tensor) -> float:
    """How far two float32 evaluations of the same resampled sample may lie apart.

    Both are one dot product of K kernel taps with the same K frames, summed in whatever order the conv
    picks: each is within gamma_K sum|w x| of the exact value (gamma_K = K u / (1 - K u)), so they differ by
    at most 2 gamma_K max_j ||w_j||_1 max|x|. Nothing is resampled at 16 kHz: the samples are the same.
    """
    if rate == SAMPLE_RATE:
        return 0.0
    kernel = _resampler(rate, SAMPLE_RATE).kernel  # (n, 1, K)
    taps = kernel.shape[-1]
    gamma = taps * U32 / (1 - taps * U32)
    return 2 * gamma * float(kernel.abs().sum(dim=-1).max()) * 1.01 * float(wave.abs().max())


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_a_span_is_the_same_span_of_the_whole_file(tmp_path, rate, channels):
    path = tmp_path / "a.wav"
    write_noise(path, rate, channels, seconds=3.3)
    whole = load_audio(path)  # (S,) the oracle: decode all, downmix, resample
    total = whole.shape[0]
    spans = [(0, SPAN), (total // 2 + 7, SPAN), (total - SPAN, SPAN), (1, 401), (total - 401, 401), (0, total)]
    bound = resampler_bound(rate, whole)
    with AudioSource(path) as source:
        assert source.num_samples == total
        for offset, length in spans:
            span = source.read(offset, length)
            assert span.shape == (length,) and span.dtype == torch.float32
            expected = whole[offset : offset + length]
            if rate == SAMPLE_RATE:
                assert torch.equal(span, expected), (offset, length)
            else:
                assert float((span - expected).abs().max()) <= bound, (offset, length, bound)


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_a_read_decodes_the_span_and_the_resampler_margin_only(tmp_path, monkeypatch, rate):
    path = tmp_path / "long.wav"
    write_noise(path, rate, 2, seconds=30.0, subtype="PCM_16")
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    with AudioSource(path) as source:
        source.read(12 * SAMPLE_RATE + 3, SPAN)
    if rate == SAMPLE_RATE:
        assert requested == [SPAN]  # seek, then exactly the crop
    else:
        o, n, margin = _groups(rate, SAMPLE_RATE)
        groups = -(-SPAN // n) + 1  # the span may straddle one more group than it fills
        assert len(requested) == 1 and requested[0] <= (groups + 2 * margin) * o  # 45 423 frames of 1 323 000


def test_a_span_outside_the_file_is_refused_with_its_bounds(tmp_path):
    path = tmp_path / "a.wav"
    write_noise(path, SAMPLE_RATE, 1, seconds=1.0)
    with AudioSource(path) as source, pytest.raises(ValueError, match=r"a\.wav: span \[15000, 17000\) is outside"):
        source.read(15_000, 2000)


def test_nan_in_a_span_is_named_and_nan_elsewhere_is_not_read(tmp_path):
    path = tmp_path / "nan.wav"
    data = (0.3 * np.random.default_rng(1).standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    data[4 * SAMPLE_RATE + 10 : 4 * SAMPLE_RATE + 13] = np.nan
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    with AudioSource(path) as source:
        assert torch.equal(source.read(0, SPAN), torch.from_numpy(data[:SPAN]))
        with pytest.raises(AudioError, match=r"nan\.wav: non_finite \(3 NaN/Inf samples\)"):
            source.read(4 * SAMPLE_RATE, SPAN)


def test_a_silent_span_is_returned_not_refused(tmp_path):
    path = tmp_path / "pause.wav"
    data = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    data[-SAMPLE_RATE:] = 0.5
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    with AudioSource(path) as source:
        assert torch.equal(source.read(0, SPAN), torch.zeros(SPAN))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_blocks_join_into_the_whole_file(tmp_path, rate, channels):
    """Blocks that divide nothing (7777 output samples): every seam is a case of the carried margin."""
    path = tmp_path / "a.wav"
    write_noise(path, rate, channels, seconds=2.9)
    whole = load_audio(path)
    raw, _ = sf.read(path, dtype="float32", always_2d=True)
    with AudioSource(path) as source:
        pairs = list(source.blocks(7777))
    assert len(pairs) > 5
    assert torch.equal(torch.cat([r for r, _ in pairs]), torch.from_numpy(raw))
    joined = torch.cat([w for _, w in pairs])
    assert joined.shape == whole.shape
    assert float((joined - whole).abs().max()) <= resampler_bound(rate, whole)
    stats = measure_audio(path, block_samples=7777)
    assert (stats.frames, stats.num_samples, stats.non_finite, stats.raw_non_finite) == (raw.shape[0], len(whole), 0, 0)
    assert stats.raw_peak == float(np.abs(raw).max())
    assert abs(stats.peak - float(whole.abs().max())) <= resampler_bound(rate, whole)


def loudness_bound(num_samples: int, lufs: float) -> float:
    """LU between the whole-wave and the blocked loudness of steady noise at 16 kHz (the same samples).

    The whole-wave meter takes block energies as differences of a float64 running sum over S samples, each
    prefix within S u E of exact (E the total energy): a block's energy, about E B / S for steady noise (B
    samples per block, or S when shorter), is within 2 S^2 u / B of it relatively, and so is their mean. The
    blocked meter's sums of 1600 samples add at most S u. Power to LU is 10 / ln 10 (doubled for the noise
    not being perfectly steady), and the two LUFS values are each rounded once more (|lufs| u each).
    """
    block = min(BLOCK_STEPS * SAMPLE_RATE // BLOCKS_PER_SECOND, num_samples)
    relative = 2 * num_samples**2 * U64 / block + num_samples * U64
    return 10 / math.log(10) * 2 * relative + 2 * abs(lufs) * U64


@pytest.mark.parametrize("piece", [7777, 1600, 100_000])
def test_the_blocked_loudness_is_the_whole_wave_loudness(piece):
    wave = (0.1 * torch.randn(40 * SAMPLE_RATE + 123, generator=torch.Generator().manual_seed(3))).float()
    wave[10 * SAMPLE_RATE : 20 * SAMPLE_RATE] *= 0.01  # a quiet stretch the relative gate drops
    meter = LoudnessMeter(SAMPLE_RATE)
    for start in range(0, wave.shape[0], piece):
        meter.feed(wave[start : start + piece])
    expected = loudness(wave)
    assert abs(meter.lufs() - expected) <= loudness_bound(wave.shape[0], expected), (meter.lufs(), expected)


def test_the_blocked_loudness_of_a_clip_shorter_than_one_block():
    wave = 0.1 * torch.randn(5000, generator=torch.Generator().manual_seed(4))
    meter = LoudnessMeter(SAMPLE_RATE)
    meter.feed(wave[:3000])
    meter.feed(wave[3000:])
    expected = loudness(wave)
    assert abs(meter.lufs() - expected) <= loudness_bound(5000, expected)
