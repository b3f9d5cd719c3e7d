"""Whisper's front-end: its log-mel features (80 bins; 128 for large-v3) and its conv stem, as Whisper computes
them (openai/whisper audio.py + model.py; transformers' WhisperFeatureExtractor + WhisperEncoder).

Features: centred 25 ms Hann STFT every 10 ms (reflect padding, the last frame dropped), power through Slaney mel
filters, log10 clamped at 1e-10, floored 8 below the clip's maximum, then (x + 4) / 4. Stem: conv1d (kernel 3,
padding 1) + GELU, conv1d (kernel 3, stride 2, padding 1) + GELU: 50 Hz frames, one per 320 samples.

Clips under 30 s (`clip`):
- "pad" (default, as Whisper was trained and as transformers requires): every clip is zero-padded to
  `clip_samples` (30 s) before the features, so the encoder always sees 1500 frames and attends over the padding
  (EncoderConfig.attend_padding); the returned lengths still count the clip's own frames, for pooling and losses.
- "trim": the features of the clip as given, the position table cut to its frames (a batch is padded to its
  longest clip and the padding masked in attention, like the waveform models).

Framing: frame t is centred on sample 320 t and sees samples [320 t - 520, 320 t + 520): hop 320, window 1040,
offset -520 (nn/frontend.py; the label mapping and frame probes use the offset, stitching only hop and window).

Shapes: B batch, S samples, M mel frames, N mel bins, T frames, C channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torchaudio
from torch import Tensor, nn

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.checks import fail, require_count
from ssl_audio.nn.frontend import Frontend

N_FFT = 400  # 25 ms at 16 kHz
MEL_HOP = 160  # 10 ms
CLIP_SAMPLES = 30 * SAMPLE_RATE  # Whisper's window: 30 s, 3000 mel frames, 1500 encoder frames
DYNAMIC_RANGE = 8.0  # log10 units kept below the clip's maximum (80 dB)
STEM_HOP = 2 * MEL_HOP  # the second conv's stride 2
STEM_WINDOW = N_FFT + 4 * MEL_HOP  # five mel frames (two convolutions of kernel 3, the second strided)
# Frame t is centred on stem input 2t, mel frame 2t (both convs padded by one), whose centre is sample 160 * 2t
# (the STFT is centred): its window starts half a window before.
STEM_OFFSET = -(STEM_WINDOW // 2)

ClipMode = Literal["pad", "trim"]


@dataclass(frozen=True, kw_only=True)
class WhisperFrontendConfig:
    """Defaults: Whisper base (80 bins, 512 wide, clips padded to 30 s)."""

    kind: Literal["whisper"] = "whisper"
    num_mels: int = 80  # 80 (tiny ... large-v2) or 128 (large-v3)
    width: int = 512  # the stem's channels: Whisper's model width
    clip: ClipMode = "pad"  # clips under `clip_samples`: "pad" to it (as trained) or "trim" the positions
    clip_samples: int = CLIP_SAMPLES  # 30 s; the longest input either way

    def __post_init__(self) -> None:
        require_count(self, "num_mels", "width", "clip_samples")
        if self.clip not in ("pad", "trim"):
            fail(self, "clip", f"must be 'pad' or 'trim', got {self.clip!r}")
        if self.clip_samples < N_FFT:
            fail(self, "clip_samples", f"must be at least one STFT window ({N_FFT}), got {self.clip_samples}")

    @property
    def out_channels(self) -> int:
        return self.width

    @property
    def hop(self) -> int:
        return STEM_HOP

    @property
    def window(self) -> int:
        return STEM_WINDOW

    @property
    def max_frames(self) -> int:
        """Encoder frames of a full clip: 1500 for 30 s (the position table's length)."""
        return frame_lengths(torch.tensor([self.clip_samples])).item()  # type: ignore[return-value]

    def flops(self, samples: int) -> tuple[float, int]:
        """FLOPs on one input of `samples` (two per multiply-add: the mel projection and the stem; the FFT is not
        counted, as torch's FlopCounterMode), and the frames it yields."""
        seen = self.clip_samples if self.clip == "pad" else samples
        mels = seen // MEL_HOP
        frames = (mels + 1) // 2
        n, c = self.num_mels, self.width
        flops = 2.0 * mels * (N_FFT // 2 + 1) * n + 2.0 * n * 3 * c * mels + 2.0 * c * 3 * c * frames
        return flops, frames


def mel_lengths(lengths: Tensor) -> Tensor:
    """Mel frames of each clip: one per 160 samples (the centred STFT's extra last frame is dropped)."""
    return torch.div(lengths, MEL_HOP, rounding_mode="floor")


def frame_lengths(lengths: Tensor) -> Tensor:
    """Encoder frames of each clip: the strided conv (kernel 3, padding 1) halves the mel frames, rounding up."""
    return torch.div(mel_lengths(lengths) + 1, 2, rounding_mode="floor")


class WhisperLogMel(nn.Module):
    """(B, S) waves -> (B, N, M) Whisper log-mel, always in fp32. The floor is taken from each clip's own frames."""

    def __init__(self, num_mels: int) -> None:
        super().__init__()
        with torch.device("cpu"):  # torchaudio mixes devices when built under a meta device (expected_state)
            filters = torchaudio.functional.melscale_fbanks(
                N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, num_mels, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
            )  # (F, N): librosa's / Whisper's filters
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)  # derived, not learned
        self.register_buffer("hann", torch.hann_window(N_FFT), persistent=False)

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), N_FFT, MEL_HOP, window=self.hann, center=True, return_complex=True)
            power = spec[..., :-1].abs().square()  # (B, F, M): Whisper drops the last frame
            log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()  # (B, N, M)
            valid = log_spec
            if lengths is not None:  # the clip's maximum, over its own frames only
                frames = torch.arange(log_spec.shape[-1], device=wave.device)
                valid = log_spec.masked_fill(frames[None, None, :] >= mel_lengths(lengths)[:, None, None], -math.inf)
            peak = valid.amax(dim=(1, 2), keepdim=True)
            return (torch.maximum(log_spec, peak - DYNAMIC_RANGE) + 4.0) / 4.0


class WhisperStem(nn.Module):
    """(B, N, M) log-mel -> (B, T, C): Whisper's two padded convolutions with GELU."""

    def __init__(self, num_mels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(num_mels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)

    def forward(self, mel: Tensor) -> Tensor:
        x = nn.functional.gelu(self.conv1(mel))
        return nn.functional.gelu(self.conv2(x)).transpose(1, 2)


class WhisperFrontend(Frontend):
    def __init__(self, cfg: WhisperFrontendConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = WhisperLogMel(cfg.num_mels)
        self.stem = WhisperStem(cfg.num_mels, cfg.width)
        self.out_channels = cfg.width

    @property
    def min_samples(self) -> int:
        return N_FFT  # one mel frame (the reflect padding needs more than half a window)

    @property
    def max_samples(self) -> int:
        return self.cfg.clip_samples

    @property
    def offset(self) -> int:
        return STEM_OFFSET

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return frame_lengths(lengths)

    def features(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, S) waves -> (B, N, M) log-mel as the stem reads it (padded to the clip in "pad" mode) and (B,)
        sample lengths of the clips (S for every row when `lengths` is None)."""
        if wave.ndim != 2:
            raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(wave.shape)}")
        if not self.min_samples <= wave.shape[1] <= self.cfg.clip_samples:
            raise ValueError(
                f"waveforms have {wave.shape[1]} samples; Whisper's front-end takes {self.min_samples} to "
                f"{self.cfg.clip_samples} (its {self.cfg.clip_samples / SAMPLE_RATE:g} s window)"
            )
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], device=wave.device)
        if self.cfg.clip == "pad":
            wave = nn.functional.pad(wave, (0, self.cfg.clip_samples - wave.shape[1]))
        return self.mel(wave, lengths), lengths

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, S) waveforms -> (B, T, C) stem frames (T = 1500 in "pad" mode) and (B,) frames of each clip."""
        mel, lengths = self.features(wave, lengths)
        return self.stem(mel), self.output_lengths(lengths)
