import math

import numpy as np
import pytest
import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.collate import Batch
from ssl_audio.data.conditions import Conditioner, ConditionsConfig, condition_batch, room_impulse_response

REVERB_ONLY = {"reverb_prob": 1.0}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def speech_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian rows at different levels, zero padded to the longest."""
    g = gen(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        waves[row, :n] = 10 ** (-torch.rand((), generator=g)) * torch.randn(n, generator=g)
    return waves, torch.tensor(lengths)


def butterworth(f: float, corner: float, order: int = 4, *, high: bool = False) -> float:
    """|H(f)| of a Butterworth filter: 1 / sqrt(1 + (f / fc)^(2n)), (fc / f) for a high-pass."""
    ratio = corner / f if high else f / corner
    return 1.0 / math.sqrt(1.0 + ratio ** (2 * order))


def tone_amplitude(x: np.ndarray, freq: float) -> float:
    """Least-squares amplitude of a sine of `freq` Hz in x (cos and sin fitted together)."""
    t = np.arange(len(x)) / SAMPLE_RATE
    basis = np.stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)], 1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coef))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reverb_prob": 1.5},
        {"channel_prob": -0.1},
        {"rt60_s": (0.8, 0.2)},
        {"rt60_s": (0.0, 0.5)},
        {"drr_db": (0.0, math.inf)},
        {"max_rir_seconds": 0.0},
        {"highpass_hz": (0.0, 100.0)},
        {"lowpass_hz": (3000.0, 8000.0)},
        {"highpass_hz": (100.0, 4000.0)},
        {"tilt_db_per_octave": (3.0, -3.0)},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ConditionsConfig(**kwargs)


def test_zero_probabilities_change_nothing():
    waves, lengths = speech_batch([4000, 3000])
    cfg = ConditionsConfig()
    assert not cfg.enabled
    out, info = condition_batch(waves, lengths, cfg, generator=gen(0))
    assert out is waves and not info.reverb.any() and not info.channel.any() and info.rirs.shape[0] == 0


def test_impulse_response_has_the_drawn_drr_and_rt60():
    rt60 = torch.tensor([0.3, 0.6])
    drr = torch.tensor([0.0, 9.0])
    rirs = room_impulse_response(rt60, drr, max_seconds=1.0, generator=gen(3))
    assert rirs.shape == (2, round(0.6 * SAMPLE_RATE))
    assert torch.all(rirs[:, 0] == 1.0)
    assert torch.all(rirs[0, round(0.3 * SAMPLE_RATE) :] == 0)  # cut at its own RT60
    tail_energy = rirs[:, 1:].pow(2).sum(1)
    torch.testing.assert_close(10 * torch.log10(1.0 / tail_energy), drr.double(), rtol=0, atol=1e-9)
    for row, expected in enumerate(rt60.tolist()):
        # Schroeder backward integration, then a line through the -5 to -25 dB part (T20) extrapolated to 60 dB.
        tail = rirs[row, 1 : round(expected * SAMPLE_RATE)].numpy() ** 2  # to its cut
        edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())
        part = (edc <= -5) & (edc >= -25)
        slope = np.polyfit(np.arange(len(edc))[part] / SAMPLE_RATE, edc[part], 1)[0]  # dB per second
        # The Gaussian tail's squared samples scatter about the envelope; the EDC sums thousands of them, so
        # the fitted slope is within a few per cent of the envelope's -60 dB / RT60 (seed 3: +1.2 % and -0.9 %;
        # seeds 0-5 stayed within 2.8 %).
        assert -60 / slope == pytest.approx(expected, rel=0.05)


def test_long_rt60_is_cut_at_max_seconds_but_keeps_its_decay():
    rirs = room_impulse_response(torch.tensor([2.0]), torch.tensor([3.0]), max_seconds=0.25, generator=gen(0))
    assert rirs.shape == (1, SAMPLE_RATE // 4)
    tail = rirs[0, 1:].numpy()
    # energy of the first and last 500 taps: 2 s decay -> 60 dB * (dt / 2 s) between the two windows' centres
    first, last = (tail[:500] ** 2).mean(), (tail[-500:] ** 2).mean()
    drop = 10 * np.log10(first / last)
    expected = 60 * (len(tail) - 500) / SAMPLE_RATE / 2.0
    # a mean of 500 squared Gaussians scatters by sqrt(2 / 500) = 6 % (0.27 dB); the difference of two by ~0.4 dB
    assert drop == pytest.approx(expected, abs=1.5)


def test_reverberation_is_linear_convolution_cut_and_rescaled():
    lengths = [6000, 3500, 800]
    waves, lens = speech_batch(lengths, seed=1)
    cfg = ConditionsConfig(**REVERB_ONLY, rt60_s=(0.05, 0.2))
    out, info = condition_batch(waves, lens, cfg, generator=gen(4))
    assert info.reverb.all() and not info.channel.any()
    for row, n in enumerate(lengths):
        x = waves[row, :n].double().numpy()
        wet = np.convolve(x, info.rirs[row].numpy())[:n]  # numpy's direct convolution: the oracle
        wet *= np.sqrt(np.mean(x**2) / np.mean(wet**2))
        got = out[row, :n].double().numpy()
        # float32 FFTs of 2^16 points: rounding grows like eps * log2(n), 16 eps at worst (measured on the longest
        # row, seeds 0-5: 1.6-2.4 eps)
        assert np.max(np.abs(got - wet)) <= 16 * np.finfo(np.float32).eps * np.max(np.abs(wet))
        assert torch.all(out[row, n:] == 0)


def test_band_limit_matches_butterworth_magnitudes():
    n = SAMPLE_RATE  # 1 s: both tones have whole cycles
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    wave = (0.3 * torch.sin(2 * math.pi * 500 * t) + 0.3 * torch.sin(2 * math.pi * 6000 * t)).float()
    cfg = ConditionsConfig(
        channel_prob=1.0, highpass_hz=(100.0, 100.0), lowpass_hz=(3000.0, 3000.0), tilt_db_per_octave=(0.0, 0.0)
    )
    out, info = condition_batch(wave[None], torch.tensor([n]), cfg, generator=gen(0))
    middle = out[0, n // 4 : 3 * n // 4].double().numpy()  # away from the zero-phase filter's edge transients
    ratio = tone_amplitude(middle, 6000) / tone_amplitude(middle, 500)
    expected = (butterworth(6000, 3000) * butterworth(6000, 100, high=True)) / (
        butterworth(500, 3000) * butterworth(500, 100, high=True)
    )
    assert expected == pytest.approx(1 / 257**0.5, rel=1e-3)  # one octave past a 4th-order corner: -24 dB
    assert ratio == pytest.approx(expected, rel=1e-3)


def test_tilt_is_db_per_octave_about_1khz():
    n = SAMPLE_RATE
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    wave = (0.2 * torch.sin(2 * math.pi * 1000 * t) + 0.2 * torch.sin(2 * math.pi * 4000 * t)).float()
    cfg = ConditionsConfig(
        channel_prob=1.0, highpass_hz=(50.0, 50.0), lowpass_hz=(7800.0, 7800.0), tilt_db_per_octave=(3.0, 3.0)
    )
    out, _ = condition_batch(wave[None], torch.tensor([n]), cfg, generator=gen(0))
    middle = out[0, n // 4 : 3 * n // 4].double().numpy()
    ratio_db = 20 * np.log10(tone_amplitude(middle, 4000) / tone_amplitude(middle, 1000))
    corners_db = 20 * np.log10(
        butterworth(4000, 7800)
        * butterworth(4000, 50, high=True)
        / (butterworth(1000, 7800) * butterworth(1000, 50, high=True))
    )
    assert ratio_db == pytest.approx(6.0 + corners_db, abs=1e-3)  # two octaves at +3 dB each


def test_level_padding_untouched_rows_and_determinism():
    lengths = [5000, 4200, 300, 4800, 2500, 5000, 1000, 3900]
    waves, lens = speech_batch(lengths, seed=2)
    waves[6] = 0.0  # a silent row stays silent
    cfg = ConditionsConfig(reverb_prob=0.5, channel_prob=0.5)
    out, info = condition_batch(waves, lens, cfg, generator=gen(11))
    again, _ = condition_batch(waves, lens, cfg, generator=gen(11))
    assert torch.equal(out, again)
    changed = info.reverb | info.channel
    assert changed.any() and not changed.all()
    for row, n in enumerate(lengths):
        if not changed[row] or row == 6:
            assert torch.equal(out[row], waves[row])
            continue
        assert not torch.equal(out[row], waves[row])
        assert torch.all(out[row, n:] == 0)
        power_in = waves[row, :n].double().pow(2).mean()
        power_out = out[row, :n].double().pow(2).mean()
        assert float(power_out / power_in) == pytest.approx(1.0, rel=1e-6)  # float32 rounding of n samples
    for name in ("rt60_s", "drr_db"):
        assert torch.isnan(getattr(info, name)[~info.reverb]).all()
    assert info.rirs.shape[0] == int(info.reverb.sum())


def test_conditioner_keeps_the_batch_but_the_waves():
    waves, lens = speech_batch([3000, 2000], seed=5)
    labels = (torch.tensor([[1, 2, 3], [4, 5, 6]]),)
    batch = Batch(
        waves=waves, lengths=lens, indices=torch.tensor([7, 9]), offsets=torch.tensor([0, 160]), labels=labels
    )
    conditioner = Conditioner(ConditionsConfig(reverb_prob=1.0, channel_prob=1.0))
    out = conditioner(batch, gen(0))
    assert out.labels is labels and torch.equal(out.lengths, lens) and torch.equal(out.offsets, batch.offsets)
    assert not torch.equal(out.waves, waves) and conditioner.last_info is not None


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"waves \(B, S\)"):
        condition_batch(torch.zeros(10), torch.tensor([10]), ConditionsConfig(reverb_prob=1.0), generator=gen(0))
    with pytest.raises(ValueError, match="lengths must be in"):
        condition_batch(torch.zeros(1, 10), torch.tensor([11]), ConditionsConfig(reverb_prob=1.0), generator=gen(0))


def test_level_restoration_is_capped_for_a_row_the_channel_removes():
    """A constant (DC) row through a 300 Hz high-pass keeps only its edge transients; restoring its level would
    amplify them by far more than MAX_GAIN_DB (20 dB), so its power stays below the input's."""
    n = SAMPLE_RATE
    wave = torch.full((1, n), 0.01)
    cfg = ConditionsConfig(
        channel_prob=1.0, highpass_hz=(300.0, 300.0), lowpass_hz=(7800.0, 7800.0), tilt_db_per_octave=(0.0, 0.0)
    )
    out, _ = condition_batch(wave, torch.tensor([n]), cfg, generator=gen(0))
    assert 0 < float(out.double().pow(2).mean()) < 0.5 * float(wave.double().pow(2).mean())
