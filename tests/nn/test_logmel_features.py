"""The log-mel frames against their references: torchaudio's kaldi fbank and transformers' WhisperFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from transformers import WhisperFeatureExtractor

from ssl_audio.nn.logmel_frontend import LogMel
from ssl_audio.nn.mel import MEL_HOP, MEL_WINDOW, slaney_mel_filters

RATE = 16_000


def chirp(seconds: float, seed: int) -> np.ndarray:
    """A chirp with white noise under it (every bin is within ~40 dB of its frame's peak), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0, f1 = rng.uniform(100, 3000, size=2)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.4 * np.sin(phase) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("num_mels", [80, 128])
def test_kaldi_mode_is_torchaudio_fbank_in_float64(num_mels: int) -> None:
    # In float64 both compute the same sums with rounding near 1e-16 of the frame energy: only a different
    # algorithm could move a log energy by 1e-6.
    wave = torch.from_numpy(chirp(1.3, seed=num_mels)).double()
    ours = LogMel("kaldi", num_mels, "none").double()(wave[None], None)[0]
    ref = kaldi.fbank(wave[None], num_mel_bins=num_mels, dither=0.0, sample_frequency=RATE)
    assert ours.shape == ref.shape == ((wave.numel() - MEL_WINDOW) // MEL_HOP + 1, num_mels)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("num_mels", [80, 128])
def test_kaldi_mode_matches_torchaudio_fbank_in_float32(num_mels: int) -> None:
    wave = torch.from_numpy(chirp(1.5, seed=7 + num_mels))
    ours = LogMel("kaldi", num_mels, "none")(wave[None], None)[0]
    ref = kaldi.fbank(wave[None], num_mel_bins=num_mels, dither=0.0, sample_frequency=RATE)
    # The banks are kaldi's single-precision ones to the bit, and the frames go through the same float32
    # steps (DC removal, pre-emphasis, Povey window, 512-point FFT): the FFT's rounding, which on a bin far
    # below its frame's peak moves the log by ~1e-3 against float64, is then the same in both. What may
    # differ is the mel sum's order, and its terms are all positive: ~1e-7 relative, far inside 1e-4.
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def burst_with_silence(seed: int) -> np.ndarray:
    """Chirp, then near-silence (below Whisper's max - 8 clamp), then a loud tone in the middle (the maximum
    lies in an interior frame, which both framings share), then chirp again."""
    rng = np.random.default_rng(seed)
    quiet = (1e-6 * rng.standard_normal(4000)).astype(np.float32)
    t = np.arange(3200) / RATE
    tone = (0.9 * np.sin(2 * np.pi * 1000 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    return np.concatenate([chirp(0.5, seed), quiet, tone, chirp(0.6, seed + 1)])


@pytest.mark.parametrize("num_mels", [80, 128])
def test_whisper_mode_matches_whisper_feature_extractor(num_mels: int) -> None:
    x = burst_with_silence(num_mels)
    ours = LogMel("whisper", num_mels, "none")(torch.from_numpy(x)[None], torch.tensor([x.size]))[0].numpy()
    extractor = WhisperFeatureExtractor(feature_size=num_mels)
    np.testing.assert_allclose(extractor.mel_filters, slaney_mel_filters(num_mels).numpy(), atol=1e-8)
    # Whisper centres its STFT: its frame m covers [160 m - 200, 160 m + 200). On the wave 40 samples later
    # that is [160 (m - 1), 160 (m - 1) + 400): our frame m - 1. Frame 0 would need 40 samples before the
    # start (Whisper reflects them), so frames 1.. are compared.
    theirs = extractor(x[40:], sampling_rate=RATE, return_tensors="np").input_features[0].T  # (3000, N)
    n = ours.shape[0]
    assert n == (x.size - MEL_WINDOW) // MEL_HOP + 1
    np.testing.assert_allclose(ours[1:], theirs[2 : n + 1], atol=1e-4, rtol=0)
    floor = ours.max() - 2.0  # the clamp at max - 8, after (x + 4) / 4
    assert np.isclose(ours.min(), floor, atol=1e-6) and (np.abs(ours - floor) < 1e-6).mean() > 0.05


def test_whisper_clamp_and_utterance_norm_ignore_padding() -> None:
    short, long = burst_with_silence(1)[:9000], burst_with_silence(2)
    batch = torch.zeros(2, long.size)
    batch[0, : short.size], batch[1] = torch.from_numpy(short), torch.from_numpy(long)
    lengths = torch.tensor([short.size, long.size])
    for features, norm in (("whisper", "none"), ("kaldi", "utterance"), ("whisper", "utterance")):
        mel = LogMel(features, 80, norm)
        alone = mel(batch[:1, : short.size], lengths[:1])[0]
        padded = mel(batch, lengths)[0]
        frames = alone.shape[0]
        torch.testing.assert_close(padded[:frames], alone, atol=1e-5, rtol=0)
        if norm == "utterance":  # each bin: mean 0, variance 1 over the valid frames; padded frames are 0
            torch.testing.assert_close(alone.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
            torch.testing.assert_close(alone.var(0, unbiased=False), torch.ones(80), atol=1e-3, rtol=0)
            assert padded[frames:].abs().max() == 0
