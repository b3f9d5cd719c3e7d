"""Integrated loudness after ITU-R BS.1770-4: K-weighting, 400 ms blocks every 100 ms, two gates.

The standard gives the two K-weighting biquads only at 48 kHz. Each is a pre-warped bilinear transform of
a second-order section; `k_weighting` solves the 48 kHz coefficients for that section's corner frequency,
Q and gains and redesigns it at the signal's rate, so at 48 kHz the standard's coefficients come back.
Filtering runs in float64 with no clamping: a full-scale signal rises above 1 after the +4 dB shelf, and
clipping it there (torchaudio's `loudness` does) under-reads loud audio.
"""

from __future__ import annotations

import functools
import math

import torch
import torchaudio.functional as AF

SPEC_RATE = 48_000  # Hz: the rate of the standard's coefficient tables
# BS.1770-4 table 1 (pre-filter, a high shelf) and table 2 (RLB high-pass): (b0, b1, b2), (1, a1, a2)
SPEC_SHELF = ((1.53512485958697, -2.69169618940638, 1.19839281085285), (1.0, -1.69065929318241, 0.73248077421585))
SPEC_HIGHPASS = ((1.0, -2.0, 1.0), (1.0, -1.99004745483398, 0.99007225036621))
BLOCKS_PER_SECOND = 10  # block starts are 100 ms apart (75 % overlap)
BLOCK_STEPS = 4  # a gating block spans 4 steps: 400 ms
ABSOLUTE_GATE = -70.0  # LUFS
RELATIVE_GATE = -10.0  # LU below the loudness of the blocks that pass the absolute gate
OFFSET = -0.691  # dB: calibrates a 0 dBFS 997 Hz sine to -3.01 LUFS on one channel
MAX_CHANNELS = 3  # L, R, C weigh 1.0; surround channels need a layout to be weighted (1.41)

Biquad = tuple[tuple[float, float, float], tuple[float, float, float]]


def _poles(section: Biquad) -> tuple[float, float]:
    """(K, Q) of a 48 kHz denominator a = (1, 2 (K^2 - 1) / d, (1 - K/Q + K^2) / d), d = 1 + K/Q + K^2,
    the pre-warped bilinear form with K = tan(pi f0 / rate); solved exactly from a1 and a2."""
    _, (_, a1, a2) = section
    d = 4.0 / (1.0 - a1 + a2)
    k = math.sqrt((1.0 + a1 + a2) / (1.0 - a1 + a2))
    return k, k / ((1.0 - a2) * d / 2.0)


def _redesign(section: Biquad, sample_rate: int) -> tuple[float, float, float]:
    """(K, Q, d) at `sample_rate` for the corner frequency and Q of the 48 kHz section."""
    k48, q = _poles(section)
    corner = math.atan(k48) * SPEC_RATE / math.pi  # Hz
    if corner >= sample_rate / 2:
        raise ValueError(f"loudness: a {sample_rate} Hz rate cannot hold the K-weighting corner at {corner:.0f} Hz")
    k = math.tan(math.pi * corner / sample_rate)
    return k, q, 1.0 + k / q + k * k


def _denominator(k: float, q: float, d: float) -> tuple[float, float, float]:
    return 1.0, 2.0 * (k * k - 1.0) / d, (1.0 - k / q + k * k) / d


@functools.lru_cache(maxsize=16)
def k_weighting(sample_rate: int) -> tuple[Biquad, Biquad]:
    """The two K-weighting biquads at `sample_rate`, each as ((b0, b1, b2), (1, a1, a2)).

    The shelf keeps unit gain at DC and its 48 kHz gains Vh (at Nyquist) and Vb (mid-band), solved from
    b0 - b1 + b2 = 4 Vh / d and b0 - b2 = 2 Vb K / (Q d). The high-pass keeps the standard's numerator
    (1, -2, 1) at every rate, as libebur128 and pyloudnorm's spec-exact filters do.
    """
    (b0, b1, b2), _ = SPEC_SHELF
    k48, q = _poles(SPEC_SHELF)
    d48 = 1.0 + k48 / q + k48 * k48
    vh, vb = (b0 - b1 + b2) * d48 / 4.0, (b0 - b2) * d48 * q / (2.0 * k48)
    k, q, d = _redesign(SPEC_SHELF, sample_rate)
    shelf = ((vh + vb * k / q + k * k) / d, 2.0 * (k * k - vh) / d, (vh - vb * k / q + k * k) / d)
    highpass = _redesign(SPEC_HIGHPASS, sample_rate)
    return (shelf, _denominator(k, q, d)), ((1.0, -2.0, 1.0), _denominator(*highpass))


def k_weighted(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(..., S) audio through both K-weighting stages, in float64 and without clamping."""
    out = wave.to(torch.float64)
    for b, a in k_weighting(sample_rate):
        a_coeffs, b_coeffs = (torch.tensor(c, dtype=out.dtype, device=out.device) for c in (a, b))
        out = AF.lfilter(out, a_coeffs, b_coeffs, clamp=False)
    return out


def block_powers(weighted: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean square of each gating block, (C, S) -> (C, J), computed from a running sum.

    Block j covers samples [floor(j R / 10), floor((j + 4) R / 10)) for rate R; only complete blocks count.
    A signal shorter than one block is a single block over its whole length.
    """
    num_samples = weighted.shape[-1]
    steps = torch.arange((BLOCKS_PER_SECOND * num_samples + BLOCKS_PER_SECOND - 1) // sample_rate + 1)
    bounds = steps * sample_rate // BLOCKS_PER_SECOND  # sample index of each 100 ms step
    starts, ends = bounds[:-BLOCK_STEPS], bounds[BLOCK_STEPS:]
    if starts.numel() == 0:  # shorter than 400 ms: one block holding everything
        starts, ends = torch.tensor([0]), torch.tensor([num_samples])
    running = torch.nn.functional.pad(weighted.square().cumsum(dim=-1), (1, 0))  # (C, S + 1)
    return (running[:, ends] - running[:, starts]) / (ends - starts).to(running.dtype)


def _gated_loudness(powers: torch.Tensor, keep: torch.Tensor) -> float:
    """LUFS of the channel-summed mean power over the kept blocks; -inf when none is kept."""
    if not keep.any():
        return -math.inf
    return OFFSET + 10.0 * math.log10(float(powers[keep].mean()))


def integrated_loudness(wave: torch.Tensor, sample_rate: int) -> float:
    """Gated integrated loudness in LUFS of (S,) mono or (C, S) audio with C <= 3 front channels.

    Every block's loudness is OFFSET + 10 log10 of its channel-summed mean square; blocks at or below -70
    LUFS are dropped, then those at or below the loudness of the rest minus 10 LU. -inf for silence.
    """
    if wave.ndim not in (1, 2) or (wave.ndim == 2 and not 1 <= wave.shape[0] <= MAX_CHANNELS):
        raise ValueError(f"loudness: expected (S,) or (C, S) with C <= {MAX_CHANNELS}, got shape {tuple(wave.shape)}")
    if wave.shape[-1] == 0:
        raise ValueError(f"loudness: no samples (shape {tuple(wave.shape)})")
    channels = wave.reshape(-1, wave.shape[-1])  # (C, S)
    return gated_loudness(block_powers(k_weighted(channels, sample_rate), sample_rate).sum(dim=0))


def gated_loudness(powers: torch.Tensor) -> float:
    """LUFS of (J,) channel-summed block powers after the absolute and relative gates; -inf for silence."""
    block_lufs = OFFSET + 10.0 * torch.log10(powers)  # -inf for a silent block
    above_absolute = block_lufs > ABSOLUTE_GATE
    relative = _gated_loudness(powers, above_absolute) + RELATIVE_GATE
    return _gated_loudness(powers, above_absolute & (block_lufs > relative))
