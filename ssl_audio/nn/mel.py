"""Log-mel spectrograms of batched waveforms, framed without centre padding (25 ms windows every 10 ms).

Two flavours, both written from their definitions:
- kaldi: kaldi's fbank as torchaudio.compliance.kaldi.fbank computes it with dither 0 (per-frame DC removal,
  pre-emphasis 0.97, Povey window, FFT size 512, kaldi's mel triangles from 20 Hz to Nyquist, natural log
  floored at float32 epsilon).
- whisper: Whisper's (n_fft 400, periodic Hann window, Slaney mel filters, log10 floored at 1e-10, then
  clamped to (utterance max - 8) and mapped to (x + 4) / 4).

Framing: mel frame m covers samples [m * 160, m * 160 + 400) (kaldi's snip_edges). Whisper centres its STFT
(reflect-pads 200 samples each side); here it is not centred, so the framing contract of nn/frontend.py holds.
Whisper's frame m + 1 of a waveform that starts 40 samples later is frame m here (200 = 160 + 40).

Shapes: B batch, S samples, M mel frames, N mel bins.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE

MEL_WINDOW, MEL_HOP = 400, 160  # 25 ms every 10 ms at 16 kHz
KALDI_FFT = 512  # kaldi rounds the 400-sample window up to a power of two
WHISPER_FFT = 400
MelFlavour = Literal["kaldi", "whisper"]


def mel_frames(samples: Tensor | int) -> Tensor | int:
    """Mel frames an input of `samples` yields: floor((S - 400) / 160) + 1, never negative."""
    if isinstance(samples, int):
        return max((samples - MEL_WINDOW) // MEL_HOP + 1, 0)
    return (torch.div(samples - MEL_WINDOW, MEL_HOP, rounding_mode="floor") + 1).clamp(min=0)


def fft_bins(flavour: MelFlavour) -> int:
    return (KALDI_FFT if flavour == "kaldi" else WHISPER_FFT) // 2 + 1


def kaldi_mel_banks(num_mels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(KALDI_FFT // 2 + 1, N) kaldi's triangles, equal-width on the mel scale 1127 ln(1 + f / 700) over
    [20 Hz, 8 kHz]; the Nyquist bin gets no weight. Computed in single precision, as kaldi (BaseFloat) and
    torchaudio do: the weights then agree to the last bit, not to ~1e-5."""
    low, high = 1127.0 * math.log(1.0 + 20.0 / 700.0), 1127.0 * math.log(1.0 + (SAMPLE_RATE / 2) / 700.0)
    delta = (high - low) / (num_mels + 1)  # edges in double, as kaldi's scalars
    index = torch.arange(num_mels, dtype=torch.float32)[:, None]
    left, centre, right = low + index * delta, low + (index + 1.0) * delta, low + (index + 2.0) * delta
    hz = (SAMPLE_RATE / KALDI_FFT) * torch.arange(KALDI_FFT // 2, dtype=torch.float32)
    mel = (1127.0 * (1.0 + hz / 700.0).log())[None, :]
    up, down = (mel - left) / (centre - left), (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (N, bins)
    return torch.cat([banks, banks.new_zeros(num_mels, 1)], dim=1).T.to(dtype)


def _slaney_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    linear = hz * 3.0 / 200.0
    log = 15.0 + torch.log(hz.clamp(min=1e-10) / 1000.0) * 27.0 / math.log(6.4)
    return torch.where(hz < 1000.0, linear, log)


def _slaney_hz(mel: Tensor) -> Tensor:
    linear = mel * 200.0 / 3.0
    log = 1000.0 * torch.exp((mel - 15.0) * math.log(6.4) / 27.0)
    return torch.where(mel < 15.0, linear, log)


def slaney_mel_filters(num_mels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(WHISPER_FFT // 2 + 1, N) Slaney-normalised triangles on the Slaney mel scale over [0, 8 kHz]
    (librosa's default filters, which Whisper uses)."""
    top = _slaney_mel(torch.tensor(SAMPLE_RATE / 2, dtype=torch.float64))
    edges = _slaney_hz(torch.linspace(0.0, float(top), num_mels + 2, dtype=torch.float64))  # (N + 2,) in Hz
    freqs = torch.linspace(0.0, SAMPLE_RATE / 2, WHISPER_FFT // 2 + 1, dtype=torch.float64)[:, None]
    widths = edges[1:] - edges[:-1]
    up = (freqs - edges[None, :-2]) / widths[None, :-1]
    down = (edges[None, 2:] - freqs) / widths[None, 1:]
    filters = torch.clamp(torch.minimum(up, down), min=0.0)
    filters = filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]  # equal area per filter (Slaney norm)
    return filters.to(dtype)


def power_frames(wave: Tensor, flavour: MelFlavour) -> Tensor:
    """(B, S) -> (B, M, fft_bins) power spectra of the windowed frames."""
    wave = wave if wave.is_floating_point() else wave.float()  # float64 stays float64 (the exact checks)
    frames = wave.unfold(1, MEL_WINDOW, MEL_HOP)  # (B, M, 400)
    if flavour == "kaldi":
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # kaldi repeats the first sample
        frames = frames - 0.97 * previous
        hann = torch.hann_window(MEL_WINDOW, periodic=False, dtype=wave.dtype, device=wave.device)
        window = hann.pow(0.85)  # Povey's
        return torch.fft.rfft(frames * window, n=KALDI_FFT).abs().pow(2)
    window = torch.hann_window(MEL_WINDOW, periodic=True, dtype=wave.dtype, device=wave.device)
    return torch.fft.rfft(frames * window, n=WHISPER_FFT).abs().pow(2)


def log_mel(wave: Tensor, filters: Tensor, flavour: MelFlavour, frame_lengths: Tensor | None = None) -> Tensor:
    """(B, S) -> (B, M, N) log-mel frames, in the wave's float dtype. Whisper's clamp to (max - 8) takes each
    row's max over its `frame_lengths` valid frames only, so padding never changes a valid frame."""
    power = power_frames(wave, flavour)
    mel = power @ filters.to(power.dtype)  # (B, M, N)
    if flavour == "kaldi":
        return mel.clamp(min=torch.finfo(torch.float32).eps).log()  # kaldi floors at float epsilon
    logs = mel.clamp(min=1e-10).log10()
    valid = logs if frame_lengths is None else logs.masked_fill(~frame_mask(frame_lengths, logs.shape[1]), -math.inf)
    peak = valid.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return (torch.maximum(logs, peak - 8.0) + 4.0) / 4.0


def frame_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B,) lengths -> (B, max_length, 1) bool, True at valid frames."""
    return (torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None])[..., None]


def normalize_utterance(x: Tensor, lengths: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Per-utterance mean and variance normalisation of each bin over the valid frames of (B, M, N);
    padded frames become 0."""
    valid = torch.ones_like(x[..., :1], dtype=torch.bool) if lengths is None else frame_mask(lengths, x.shape[1])
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1, 1)
    mean = (x * valid).sum(dim=1, keepdim=True) / count
    var = ((x - mean).pow(2) * valid).sum(dim=1, keepdim=True) / count
    return ((x - mean) * torch.rsqrt(var + eps)).masked_fill(~valid, 0.0)


TimeLayer = tuple[int, int]  # (kernel, stride) of an unpadded convolution over mel frames


def stem_hop(layers: tuple[TimeLayer, ...]) -> int:
    """Samples between the stem's frames: 160 times the product of its strides."""
    return MEL_HOP * math.prod(stride for _, stride in layers)


def stem_window(layers: tuple[TimeLayer, ...]) -> int:
    """Samples one stem frame sees: its receptive field R in mel frames spans 400 + 160 (R - 1) samples."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return MEL_WINDOW + MEL_HOP * (field - 1)


def stem_lengths(samples: Tensor, layers: tuple[TimeLayer, ...]) -> Tensor:
    """(B,) sample counts -> (B,) stem frames: mel frames, then floor((L - K) / stride) + 1 per layer, never < 0."""
    lengths = mel_frames(samples)
    for kernel, stride in layers:
        lengths = (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)
    return lengths


def stem_frame_counts(samples: int, layers: tuple[TimeLayer, ...]) -> list[int]:
    """Frames after the mel framing and after each layer, for an input of `samples` (the FLOP counts)."""
    counts = [int(mel_frames(samples))]
    for kernel, stride in layers:
        counts.append(max((counts[-1] - kernel) // stride + 1, 0))
    return counts
