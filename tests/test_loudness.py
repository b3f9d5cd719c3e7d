"""BS.1770-4 integrated loudness against the standard's own numbers and against pyloudnorm (float64).

pyloudnorm's "DeMan" filter class designs the K-weighting exactly as ssl_audio.loudness does (the standard's
48 kHz sections redesigned at the signal's rate, high-pass numerator 1, -2, 1), and its blocks and gates are
those of the standard, so the two differ only by rounding. Its constants carry 12 significant digits: a
relative coefficient change of 1e-12, amplified by at most ~1 / (1 - r) ~ 70 for the 38 Hz high-pass pole of
radius r (the worst case here is r = 0.985 at 16 kHz), moves the weighted power by < 1e-10 relative, i.e.
< 1e-9 LU (10 / ln 10 = 4.34 LU per unit of relative power). PYLOUDNORM_TOL leaves a factor 10 for float64
sums over 10^5 samples. Test signals last whole multiples of 100 ms, where both cut the same blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile as sf
import torch

from ssl_audio.audio import load_audio, loudness, normalize_loudness
from ssl_audio.loudness import integrated_loudness, k_weighting

PYLOUDNORM_TOL = 1e-8  # LU, derived in the module docstring
# float32 scaling rounds each sample by <= 2^-24 relative, the power by <= 2^-23: 4.34 * 2^-23 = 5.2e-7 LU
FLOAT32_GAIN_TOL = 1e-6
RATES = (16_000, 44_100, 48_000)

# ITU-R BS.1770-4, tables 1 and 2 (48 kHz), typed in from the standard: ((b0, b1, b2), (a0, a1, a2))
BS1770_SHELF = ((1.53512485958697, -2.69169618940638, 1.19839281085285), (1.0, -1.69065929318241, 0.73248077421585))
BS1770_HIGHPASS = ((1.0, -2.0, 1.0), (1.0, -1.99004745483398, 0.99007225036621))


def reference(data: np.ndarray, rate: int, **meter) -> float:
    """pyloudnorm's integrated loudness of (S,) or (C, S) float data, with the spec-exact K-weighting."""
    data = np.asarray(data, dtype=np.float64)
    return pyloudnorm.Meter(rate, filter_class="DeMan", **meter).integrated_loudness(data.T)


def sine(rate: int, seconds: float, amplitude: float = 1.0, freq: float = 997.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def noise(rate: int, seconds: float, rms_db: float, colour: str, seed: int = 0) -> np.ndarray:
    """White or pink (power ~ 1/f, shaped in the frequency domain) float32 noise at an RMS of rms_db dBFS."""
    white = np.random.default_rng(seed).standard_normal(round(seconds * rate))
    if colour == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(white.size, 1 / rate)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n=white.size)
    return (white * 10 ** (rms_db / 20) / np.sqrt(np.mean(white**2))).astype(np.float32)


def measure(data: np.ndarray, rate: int) -> float:
    return loudness(torch.from_numpy(data), rate)


def test_k_weighting_at_48k_is_the_standards_table() -> None:
    # the redesign solves the 48 kHz sections for corner, Q and gains and rebuilds them: a round trip
    for (b, a), (spec_b, spec_a) in zip(k_weighting(48_000), (BS1770_SHELF, BS1770_HIGHPASS)):
        np.testing.assert_allclose(b, spec_b, rtol=0, atol=1e-13)
        np.testing.assert_allclose(a, spec_a, rtol=0, atol=1e-13)


@pytest.mark.parametrize("rate", RATES)
def test_k_weighting_matches_pyloudnorm_spec_filters(rate: int) -> None:
    ours = k_weighting(rate)
    theirs = [(f.b, f.a) for f in pyloudnorm.Meter(rate, filter_class="DeMan")._filters.values()]
    for (b, a), (ref_b, ref_a) in zip(ours, theirs):
        np.testing.assert_allclose(b, ref_b, rtol=1e-10)
        np.testing.assert_allclose(a, ref_a, rtol=1e-10)


@pytest.mark.parametrize("rate", RATES)
def test_full_scale_sine_is_not_clipped(rate: int) -> None:
    # the K-weighted 0 dBFS sine peaks above 1; clamping it there read -3.280 LUFS at 48 kHz
    wave = sine(rate, 3.0)
    assert measure(wave, rate) == pytest.approx(reference(wave, rate), abs=PYLOUDNORM_TOL)


def test_full_scale_sine_at_48k_reads_the_standards_calibration() -> None:
    # BS.1770 chose its -0.691 dB offset (3 decimals) so that this sine reads -3.01 LUFS (2 decimals)
    assert measure(sine(48_000, 3.0), 48_000) == pytest.approx(-3.01, abs=0.005)


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_default_pyloudnorm_differs_only_by_its_filter_design(rate: int) -> None:
    # pyloudnorm's default K-weighting is a cookbook shelf (1500 Hz) and high-pass (38 Hz), not the standard's
    # sections: on a sine the readings differ by exactly the ratio of the two responses at 997 Hz. The filters'
    # start-up transients (~1 / (1 - r) = 70 samples of 48000) differ in a way the ratio does not see: 1e-5 LU.
    wave = sine(rate, 3.0)

    def gain_db(sections: list[tuple[np.ndarray, np.ndarray]]) -> float:
        return sum(20 * math.log10(abs(scipy.signal.freqz(b, a, worN=[997.0], fs=rate)[1][0])) for b, a in sections)

    default = pyloudnorm.Meter(rate)
    ratio = gain_db(list(k_weighting(rate))) - gain_db([(f.b, f.a) for f in default._filters.values()])
    assert abs(ratio) > 0.04  # the designs really differ: 0.041 dB at 48 kHz, 0.113 dB at 16 kHz
    assert measure(wave, rate) - default.integrated_loudness(wave.astype(np.float64)) == pytest.approx(ratio, abs=1e-5)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("colour", ["white", "pink"])
@pytest.mark.parametrize("rms_db", [-6.0, -23.0, -45.0])
def test_noise_matches_pyloudnorm(rate: int, colour: str, rms_db: float) -> None:
    wave = noise(rate, 3.0, rms_db, colour, seed=rate)
    assert measure(wave, rate) == pytest.approx(reference(wave, rate), abs=PYLOUDNORM_TOL)


def test_noise_level_moves_loudness_by_the_same_amount() -> None:
    # a gain of g dB moves every block by g dB: while no block is gated, loudness follows exactly. float32(0.1)
    # is 0.1 to 1.5e-8 relative (1.3e-7 dB) and each product rounds by <= 2^-24 (<= 5.2e-7 LU in all)
    wave = noise(16_000, 3.0, -20.0, "pink")
    assert measure(wave * np.float32(0.1), 16_000) - measure(wave, 16_000) == pytest.approx(-20.0, abs=1e-6)


@pytest.mark.parametrize(
    ("loud_db", "quiet_db"),
    # white noise reads ~3.5 LU above its RMS at 16 kHz: -20/-40 dBFS read -16.5/-36.5 LUFS, so the relative gate
    # (-26.5) drops the quiet half; -66/-75 dBFS read -62.5/-71.5, below the absolute gate but above the relative
    [(-20.0, -40.0), (-66.0, -75.0)],
)
def test_gates_match_pyloudnorm(loud_db: float, quiet_db: float) -> None:
    rate = 16_000
    loud, quiet = noise(rate, 2.0, loud_db, "white", 1), noise(rate, 2.0, quiet_db, "white", 2)
    wave = np.concatenate([loud, quiet])
    got = measure(wave, rate)
    assert got == pytest.approx(reference(wave, rate), abs=PYLOUDNORM_TOL)
    # the gates did drop the quiet blocks: the ungated mean power of the whole (one 4 s block) is ~2.6 LU lower
    assert got > reference(wave, rate, block_size=len(wave) / rate) + 2.0
    assert math.isinf(measure(quiet, rate)) == (quiet_db < -70)  # alone, the quiet half passes the absolute gate?


def test_stereo_matches_pyloudnorm() -> None:
    rate = 48_000
    stereo = np.stack([noise(rate, 3.0, -18.0, "pink", 3), sine(rate, 3.0, 0.3, 440.0)])  # (2, S)
    assert integrated_loudness(torch.from_numpy(stereo), rate) == pytest.approx(
        reference(stereo, rate), abs=PYLOUDNORM_TOL
    )


def test_stereo_file_is_downmixed_then_normalised(tmp_path) -> None:
    rate = 16_000
    left, right = noise(rate, 3.0, -30.0, "pink", 4), noise(rate, 3.0, -24.0, "white", 5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), rate, subtype="FLOAT")
    wave = load_audio(path, target_lufs=-23.0).numpy()
    mono = (left + right) / 2
    np.testing.assert_allclose(wave, mono * (wave @ mono / (mono @ mono)), rtol=1e-5)  # the downmix, scaled
    assert reference(wave, rate) == pytest.approx(-23.0, abs=FLOAT32_GAIN_TOL)


@pytest.mark.parametrize("num_samples", [400, 2000, 6399])
def test_a_clip_shorter_than_a_block_is_one_block(num_samples: int) -> None:
    # defined here: under 400 ms the whole clip is a single gating block (pyloudnorm with that block size)
    rate = 16_000
    wave = noise(rate, num_samples / rate, -20.0, "white", num_samples)
    assert measure(wave, rate) == pytest.approx(
        reference(wave, rate, block_size=num_samples / rate), abs=PYLOUDNORM_TOL
    )
    # exactly one block long: the standard's meter and the short-clip rule agree
    block = noise(rate, 0.4, -20.0, "white", 7)
    assert measure(block, rate) == pytest.approx(reference(block, rate), abs=PYLOUDNORM_TOL)


def test_silence_and_clips_below_the_absolute_gate_read_minus_infinity() -> None:
    assert measure(np.zeros(16_000, np.float32), 16_000) == -math.inf
    assert measure(noise(16_000, 0.2, -85.0, "white"), 16_000) == -math.inf  # one block, below -70 LUFS
    silence = torch.zeros(16_000)
    assert torch.equal(normalize_loudness(silence, target_lufs=-23.0), silence)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((0,), r"no samples \(shape \(0,\)\)"), ((4, 8000), r"got shape \(4, 8000\)"), ((1, 2, 800), r"\(1, 2, 800\)")],
)
def test_bad_shapes_raise_value_error(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        integrated_loudness(torch.zeros(shape), 16_000)


def test_a_rate_below_the_shelf_corner_is_refused() -> None:
    # the shelf's corner is 1682 Hz: a 3 kHz signal (Nyquist 1.5 kHz) cannot be K-weighted
    with pytest.raises(ValueError, match="a 3000 Hz rate cannot hold the K-weighting corner at 1682 Hz"):
        integrated_loudness(torch.ones(3000), 3000)
