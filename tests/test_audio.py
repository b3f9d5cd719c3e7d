import math

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import (
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    load_audio,
    loudness,
    normalize_loudness,
    resampled_length,
    trim_silence,
)

# BS.1770 is calibrated so that a full-scale 997 Hz sine reads -3.01 LUFS on one channel; the K-weighting
# gain at 997 Hz is ~0 dB, so a sine of peak A reads 20*log10(A) - 3.01 (a hand-computed oracle).
SINE_0DBFS_LUFS = -3.01


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def peak_frequency(wave: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wave.double() * torch.hann_window(wave.numel(), dtype=torch.float64)).abs()
    return float(spectrum.argmax()) * rate / wave.numel()


@pytest.mark.parametrize(("rate", "freq"), [(44_100, 1000.0), (8_000, 440.0), (22_050, 3000.0), (48_000, 6000.0)])
def test_resampling_preserves_frequency_and_exact_length(tmp_path, rate, freq):
    path = tmp_path / "tone.wav"
    data = sine(freq, 1.37, rate)
    sf.write(path, data, rate, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert wave.numel() == math.ceil(len(data) * SAMPLE_RATE / rate) == resampled_length(len(data), rate)
    assert peak_frequency(wave, SAMPLE_RATE) == pytest.approx(freq, abs=SAMPLE_RATE / wave.numel())
    # Amplitude survives in the passband (away from the edges where the sinc filter rings): RMS = A / sqrt(2).
    rms = float(wave[2000:-2000].pow(2).mean().sqrt())
    assert rms * math.sqrt(2) == pytest.approx(0.5, rel=0.02)


def test_stereo_is_averaged(tmp_path):
    left, right = sine(500, 0.5, SAMPLE_RATE, 0.6), sine(900, 0.5, SAMPLE_RATE, 0.2)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="PCM_24")
    wave = load_audio(path)
    np.testing.assert_allclose(wave.numpy(), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("amplitude", [0.5, 0.1, 0.02])
def test_loudness_of_a_sine_matches_bs1770_calibration(amplitude):
    wave = torch.from_numpy(sine(997, 3.0, SAMPLE_RATE, amplitude))
    assert loudness(wave) == pytest.approx(20 * math.log10(amplitude) + SINE_0DBFS_LUFS, abs=0.1)


def test_normalize_loudness_hits_target_and_is_peak_safe():
    wave = torch.from_numpy(sine(997, 2.0, SAMPLE_RATE, 0.5))
    quiet = normalize_loudness(wave, target_lufs=-23.0)
    assert loudness(quiet) == pytest.approx(-23.0, abs=0.05)
    expected_peak = 10 ** ((-23.0 - SINE_0DBFS_LUFS) / 20)  # hand-computed: ~0.1
    assert float(quiet.abs().max()) == pytest.approx(expected_peak, rel=0.015)
    loud = normalize_loudness(wave, target_lufs=0.0, max_peak=0.99)  # would need a peak of 1.41
    assert float(loud.abs().max()) == pytest.approx(0.99, abs=1e-6)


def test_trim_silence_removes_edges_and_shortens_long_pauses():
    rate = SAMPLE_RATE
    silence = lambda s: np.zeros(round(s * rate), np.float32)  # noqa: E731
    tone = sine(300, 0.5, rate, 0.5)
    wave = torch.from_numpy(np.concatenate([silence(1.0), tone, silence(2.0), tone, silence(0.2), tone, silence(1.0)]))
    trimmed = trim_silence(wave, rate, margin_seconds=0.05, max_pause_seconds=0.5)
    # Kept: 3 tones (1.5 s) + the 0.2 s pause whole + the 2 s pause cut to 0.5 s + two 0.05 s edge margins,
    # plus under half a frame (12.5 ms) at each of the four edges where a centred frame overlaps a tone.
    assert 1.5 + 0.2 + 0.5 + 0.1 <= trimmed.numel() / rate <= 1.5 + 0.2 + 0.5 + 0.1 + 0.05
    assert float(trimmed[: round(0.2 * rate)].abs().max()) > 0.4  # speech starts within the margin


def write(path, data, rate=SAMPLE_RATE, subtype="PCM_16"):
    sf.write(path, data, rate, subtype=subtype)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not audio\n" * 20), "unreadable"),
        (lambda p: write(p, np.full(4000, np.nan, np.float32), subtype="FLOAT"), "non_finite"),
        (lambda p: write(p, np.zeros(8000, np.float32)), "silent"),
        (lambda p: write(p, sine(440, 0.02, SAMPLE_RATE)), "too_short"),
        (lambda p: write(p, np.zeros((0,), np.float32)), "empty"),
    ],
)
def test_bad_files_raise_an_error_naming_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason == reason
    assert str(path) in str(info.value)


def test_min_samples_is_the_receptive_field_boundary(tmp_path):
    ok = write(tmp_path / "ok.wav", sine(440, MIN_SAMPLES / SAMPLE_RATE, SAMPLE_RATE))
    assert load_audio(ok).numel() == MIN_SAMPLES
    short = write(tmp_path / "short.wav", sine(440, (MIN_SAMPLES - 1) / SAMPLE_RATE, SAMPLE_RATE))
    with pytest.raises(AudioError, match="399 samples"):
        load_audio(short)
