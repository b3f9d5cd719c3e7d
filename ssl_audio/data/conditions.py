"""Multi-condition input augmentation: synthetic room reverberation and microphone / channel colouring.

Shapes: B batch, S samples (16 kHz), M rows changed, R longest impulse response (samples), F rfft bins.

Per row, independently (its decisions and ranges from one (draws, B) block of uniforms of the caller's generator,
as in ssl_audio.data.mixing; the tails' noise from one more block, as wide as the longest tail of the batch):
- reverberation with probability `reverb_prob`: convolution with a synthetic room impulse response, a direct path
  (1 at t = 0) plus a diffuse tail of Gaussian noise from the next sample on whose energy decays by 60 dB over
  RT60 ~ U(rt60_s) (amplitude exp(-ln(1000) t / RT60)), cut at min(RT60, max_rir_seconds), scaled so that
  energy(direct) / energy(tail) is DRR ~ U(drr_db) dB. The direct path at t = 0 keeps frame targets aligned.
- channel with probability `channel_prob`: a zero-phase magnitude response of a microphone or a band-limited
  line, a 4th-order Butterworth high-pass at U(highpass_hz) times a 4th-order Butterworth low-pass at
  U(lowpass_hz) times a spectral tilt of U(tilt_db_per_octave) dB per octave about 1 kHz (amplitude dB).

Both act in one float32 FFT of length >= S + R + GUARD (a linear convolution, not a circular one; GUARD holds the
zero-phase response's non-causal side). The output is cut to the row's valid length (a tail past the end is
dropped: the utterance ends where it ended) and rescaled to the row's input mean power: the condition changes,
the level does not (the gain that restores it is capped at MAX_GAIN_DB, so a row the channel nearly removes is
not blown up). Padding stays zero; rows not drawn are bit-identical; a row quieter than SILENT_POWER is left
as it is. Targets are untouched (HuBERT's labels come from the clean audio: inputs conditioned, targets clean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.checks import fail, require_finite, require_positive, require_probability
from ssl_audio.data.collate import Batch
from ssl_audio.data.mixing import SILENT_POWER
from ssl_audio.nn.conv_extractor import padding_mask

NYQUIST = SAMPLE_RATE / 2
BUTTERWORTH_ORDER = 4  # -24 dB per octave past each corner
TILT_PIVOT_HZ = 1000.0  # the tilt leaves 1 kHz unchanged
MAX_GAIN_DB = 20.0  # the most the level restoration may amplify a row
GUARD = 1024  # samples of FFT room for the zero-phase response's non-causal side (its taps die out well before)
_REVERB, _CHANNEL, _RT60, _DRR, _HIGHPASS, _LOWPASS, _TILT, _NUM_DRAWS = range(8)


@dataclass(frozen=True, kw_only=True)
class ConditionsConfig:
    """Reverberation and channel colouring of the input waves (training only; 0 probabilities disable)."""

    reverb_prob: float = 0.0  # per-utterance probability of a synthetic room
    rt60_s: tuple[float, float] = (0.2, 0.8)  # s, uniform: small office to a large reverberant room
    drr_db: tuple[float, float] = (0.0, 12.0)  # direct-to-reverberant energy ratio, dB, uniform
    max_rir_seconds: float = 1.0  # s: impulse responses are cut here (a longer RT60 keeps its decay rate)
    channel_prob: float = 0.0  # per-utterance probability of a microphone / band-limited channel
    highpass_hz: tuple[float, float] = (50.0, 300.0)  # Hz, uniform; 300 Hz: a telephone line's lower edge
    lowpass_hz: tuple[float, float] = (3400.0, 7800.0)  # Hz, uniform; 3400 Hz: a telephone line's upper edge
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)  # amplitude dB per octave about 1 kHz, uniform

    def __post_init__(self) -> None:
        require_probability(self, "reverb_prob", "channel_prob")
        require_positive(self, "max_rir_seconds")
        ranges = ("rt60_s", "drr_db", "highpass_hz", "lowpass_hz", "tilt_db_per_octave")
        require_finite(self, *ranges)
        for name in ranges:
            low, high = getattr(self, name)
            if low > high:
                fail(self, name, f"must be (low, high) with low <= high, got {(low, high)}")
        if self.rt60_s[0] <= 0:
            fail(self, "rt60_s", f"must be > 0 s, got {self.rt60_s}")
        if self.highpass_hz[0] <= 0:
            fail(self, "highpass_hz", f"must be > 0 Hz, got {self.highpass_hz}")
        if self.lowpass_hz[1] >= NYQUIST:
            fail(self, "lowpass_hz", f"must stay below Nyquist ({NYQUIST:g} Hz), got {self.lowpass_hz}")
        if self.highpass_hz[1] >= self.lowpass_hz[0]:
            fail(self, "highpass_hz", f"must stay below lowpass_hz, got {self.highpass_hz} and {self.lowpass_hz}")

    @property
    def enabled(self) -> bool:
        return self.reverb_prob > 0 or self.channel_prob > 0


@dataclass(kw_only=True)
class ConditionInfo:
    """What `condition_batch` did to each row (host tensors; nan where a row drew no such condition)."""

    reverb: Tensor  # (B,) bool
    channel: Tensor  # (B,) bool
    rt60_s: Tensor  # (B,) float64
    drr_db: Tensor  # (B,) float64
    highpass_hz: Tensor  # (B,) float64
    lowpass_hz: Tensor  # (B,) float64
    tilt_db_per_octave: Tensor  # (B,) float64
    rirs: Tensor  # (Mr, R) float64: the impulse responses of the reverberated rows, in row order, zero past each


def room_impulse_response(rt60_s: Tensor, drr_db: Tensor, max_seconds: float, *, generator: torch.Generator) -> Tensor:
    """(N,) RT60 s and DRR dB -> (N, R) float64 impulse responses on the host (see the module docstring)."""
    rt60_s, drr_db = rt60_s.double().cpu(), drr_db.double().cpu()
    if len(rt60_s) == 0:
        return torch.zeros((0, 0), dtype=torch.float64)
    taps = (torch.minimum(rt60_s, torch.tensor(max_seconds)) * SAMPLE_RATE).round().long().clamp(min=2)  # (N,)
    width = int(taps.max())
    t = torch.arange(width, dtype=torch.float64)  # (R,) samples
    noise = torch.randn((len(taps), width), generator=generator, device=generator.device, dtype=torch.float64).cpu()
    envelope = torch.exp(-math.log(1000.0) * t[None, :] / (rt60_s[:, None] * SAMPLE_RATE))  # (N, R) amplitude
    tail = noise * envelope * ((t[None, :] >= 1) & (t[None, :] < taps[:, None]))  # (N, R), zero at t = 0
    tail_energy = tail.pow(2).sum(1).clamp(min=1e-30)  # (N,)
    tail = tail * torch.sqrt(10.0 ** (-drr_db / 10.0) / tail_energy)[:, None]  # direct energy 1 / tail = DRR
    tail[:, 0] = 1.0  # the direct path
    return tail


def channel_response(freqs_hz: Tensor, highpass_hz: Tensor, lowpass_hz: Tensor, tilt_db: Tensor) -> Tensor:
    """(F,) Hz and (N,) corners and tilts -> (N, F) magnitude responses (zero phase), in the dtype of `freqs_hz`.

    In float32 the high-pass term overflows to 0 near DC, where its gain is below 5.4e-20 anyway."""
    f = freqs_hz[None, :]  # (1, F)
    high, low, tilt = (x.to(freqs_hz.dtype)[:, None] for x in (highpass_hz, lowpass_hz, tilt_db))  # (N, 1)
    two_n = 2 * BUTTERWORTH_ORDER
    highpass = 1.0 / torch.sqrt(1.0 + (high / f.clamp(min=1e-6)) ** two_n)  # 0 at DC
    lowpass = 1.0 / torch.sqrt(1.0 + (f / low) ** two_n)
    octaves = torch.log2(f.clamp(min=1.0) / TILT_PIVOT_HZ)  # below 1 Hz the high-pass has removed everything
    return highpass * lowpass * 10.0 ** (tilt * octaves / 20.0)


@torch.no_grad()
def condition_batch(
    waves: Tensor, lengths: Tensor, cfg: ConditionsConfig, *, generator: torch.Generator
) -> tuple[Tensor, ConditionInfo]:
    """(B, S) waves, (B,) lengths -> (B, S) conditioned waves and what was done (see the module docstring).

    When no row draws a condition the input tensor itself is returned.
    """
    if waves.dim() != 2 or lengths.shape != (waves.shape[0],):
        raise ValueError(
            f"conditions need waves (B, S) and lengths (B,), got {tuple(waves.shape)}, {tuple(lengths.shape)}"
        )
    batch, num_samples = waves.shape
    host_lengths = lengths.cpu().long()  # (B,)
    if (host_lengths < 1).any() or (host_lengths > num_samples).any():
        raise ValueError(f"conditions: lengths must be in [1, {num_samples}], got {host_lengths.tolist()}")
    u = torch.rand((_NUM_DRAWS, batch), generator=generator, device=generator.device, dtype=torch.float64).cpu()

    def draw(index: int, bounds: tuple[float, float], on: Tensor) -> Tensor:
        value = bounds[0] + u[index] * (bounds[1] - bounds[0])
        return torch.where(on, value, math.nan)

    reverb, channel = u[_REVERB] < cfg.reverb_prob, u[_CHANNEL] < cfg.channel_prob  # (B,)
    rt60, drr = draw(_RT60, cfg.rt60_s, reverb), draw(_DRR, cfg.drr_db, reverb)
    info = ConditionInfo(
        reverb=reverb, channel=channel, rt60_s=rt60, drr_db=drr,
        highpass_hz=draw(_HIGHPASS, cfg.highpass_hz, channel), lowpass_hz=draw(_LOWPASS, cfg.lowpass_hz, channel),
        tilt_db_per_octave=draw(_TILT, cfg.tilt_db_per_octave, channel),
        rirs=room_impulse_response(rt60[reverb], drr[reverb], cfg.max_rir_seconds, generator=generator),
    )  # fmt: skip
    changed = reverb | channel
    if not changed.any():
        return waves, info

    device = waves.device
    rows = torch.nonzero(changed).squeeze(1)  # (M,) host
    rows_d = rows.to(device)
    primary = waves[rows_d].double()  # (M, S)
    taps = info.rirs.shape[1] if len(info.rirs) else 0
    size = _fast_length(num_samples + taps + GUARD)
    spectrum = torch.fft.rfft(primary.float(), n=size)  # (M, F) complex64: float32 is plenty
    response = torch.ones(spectrum.shape, dtype=spectrum.dtype, device=device)  # (M, F)
    reverberated = reverb[rows]  # (M,) host
    if reverberated.any():
        response[reverberated.to(device)] = torch.fft.rfft(info.rirs.to(device, torch.float32), n=size)
    coloured = channel[rows]  # (M,) host
    if coloured.any():
        freqs = torch.fft.rfftfreq(size, d=1.0 / SAMPLE_RATE)  # (F,)
        gain = channel_response(
            freqs, info.highpass_hz[rows][coloured], info.lowpass_hz[rows][coloured],
            info.tilt_db_per_octave[rows][coloured],
        )  # fmt: skip
        response[coloured.to(device)] *= gain.to(device, torch.float32)
    out_rows = torch.fft.irfft(spectrum * response, n=size)[:, :num_samples].double()  # (M, S)
    row_lengths = host_lengths[rows].to(device)
    valid = ~padding_mask(row_lengths, num_samples)  # (M, S)
    out_rows = out_rows.masked_fill(~valid, 0.0)  # exact zeros (not -0.0) in the padding
    power_in = primary.pow(2).sum(1) / row_lengths  # (M,)
    power_out = out_rows.pow(2).sum(1) / row_lengths
    scale = torch.sqrt(power_in / torch.maximum(power_out, power_in * 10 ** (-MAX_GAIN_DB / 10)))
    out_rows = torch.where((power_in < SILENT_POWER)[:, None], primary, out_rows * scale[:, None])
    out = waves.clone()
    out[rows_d] = out_rows.to(waves.dtype)
    return out, info


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT size pocketfft and cuFFT handle quickly."""
    best = 1 << (n - 1).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            two = three
            while two < n:
                two *= 2
            best = min(best, two)
            three *= 3
        five *= 5
    return best


class Conditioner:
    """Batch -> Batch with conditioned waves (labels, lengths, indices, offsets kept); `last_info` keeps the latest.

    The caller passes a generator per step, e.g. seeded from (seed, step), so a resumed run conditions alike.
    """

    def __init__(self, cfg: ConditionsConfig) -> None:
        self.cfg = cfg
        self.last_info: ConditionInfo | None = None

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        waves, self.last_info = condition_batch(batch.waves, batch.lengths, self.cfg, generator=generator)
        return replace(batch, waves=waves)
