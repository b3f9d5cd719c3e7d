"""The log-mel front-end: kaldi or Whisper log-mel frames (100 Hz) and a subsampling stem.

Stems (unpadded, so frame t covers samples [t * hop, t * hop + window) exactly, see nn/frontend.py):
- "whisper": Whisper's two conv1d (kernel 3, GELU; the second stride 2): 50 Hz, hop 320, window 1040. Whisper
  pads both convolutions by one; unpadded, the first frame starts at sample 0 and every frame sees only audio.
- "conv2d": the conformer / BEST-RQ stem, two conv2d (kernel 3, stride 2, ReLU) over (time, mel) and a linear
  map of channels x remaining bins to `width`: 25 Hz, hop 640, window 1360.
Normalisation: "utterance" (each bin's mean and variance over the valid frames of its utterance) or "none"
(Whisper's own clamp and scaling only). Padding never changes a valid frame.

Shapes: B batch, S samples, M mel frames, N mel bins, T frames, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ssl_audio.checks import fail, require_count
from ssl_audio.nn.frontend import Frontend
from ssl_audio.nn.mel import (
    MelFlavour,
    TimeLayer,
    fft_bins,
    kaldi_mel_banks,
    log_mel,
    mel_frames,
    normalize_utterance,
    slaney_mel_filters,
    stem_frame_counts,
    stem_hop,
    stem_lengths,
    stem_window,
)

StemKind = Literal["whisper", "conv2d"]
Normalization = Literal["none", "utterance"]
STEM_LAYERS: dict[str, tuple[TimeLayer, ...]] = {"whisper": ((3, 1), (3, 2)), "conv2d": ((3, 2), (3, 2))}


def _bins_after_conv2d(num_mels: int) -> int:
    """Mel bins left after the conv2d stem's two (kernel 3, stride 2) convolutions."""
    first = (num_mels - 3) // 2 + 1
    return (first - 3) // 2 + 1


def check_mel_choices(cfg: object, features: str, normalize: str) -> None:
    if features not in ("kaldi", "whisper"):
        fail(cfg, "features", f"must be 'kaldi' or 'whisper', got {features!r}")
    if normalize not in ("none", "utterance"):
        fail(cfg, "normalize", f"must be 'none' or 'utterance', got {normalize!r}")


@dataclass(frozen=True, kw_only=True)
class LogMelFrontendConfig:
    """Defaults: Whisper base's input (80 Whisper log-mel bins, conv1d stem 512 wide, 50 Hz)."""

    kind: Literal["logmel"] = "logmel"
    features: MelFlavour = "whisper"  # "kaldi": torchaudio.compliance.kaldi.fbank; "whisper": Whisper's log-mel
    num_mels: int = 80  # 80 (Whisper up to large-v2, kaldi fbank) or 128 (Whisper large-v3)
    stem: StemKind = "whisper"  # "whisper": 50 Hz; "conv2d": 25 Hz
    width: int = 512  # the stem's channels C (out_channels)
    normalize: Normalization = "none"

    def __post_init__(self) -> None:
        require_count(self, "num_mels", "width")
        check_mel_choices(self, self.features, self.normalize)
        if self.stem not in STEM_LAYERS:
            fail(self, "stem", f"must be one of {list(STEM_LAYERS)}, got {self.stem!r}")
        if self.stem == "conv2d" and _bins_after_conv2d(self.num_mels) < 1:
            fail(self, "num_mels", f"the conv2d stem needs at least 7 mel bins, got {self.num_mels}")

    @property
    def layers(self) -> tuple[TimeLayer, ...]:
        return STEM_LAYERS[self.stem]

    @property
    def out_channels(self) -> int:
        return self.width

    @property
    def hop(self) -> int:
        return stem_hop(self.layers)

    @property
    def window(self) -> int:
        return stem_window(self.layers)

    def flops(self, samples: int) -> tuple[float, int]:
        """FLOPs on one input of `samples` (two per multiply-add: the mel projection and the stem's products;
        the FFT and elementwise work are not counted, as torch's FlopCounterMode), and the frames it yields."""
        mels, first, frames = stem_frame_counts(samples, self.layers)
        n, c = self.num_mels, self.width
        flops = 2.0 * mels * fft_bins(self.features) * n
        if self.stem == "whisper":
            flops += 2.0 * n * 3 * c * first + 2.0 * c * 3 * c * frames
        else:
            bins1, bins2 = (n - 3) // 2 + 1, _bins_after_conv2d(n)
            flops += 2.0 * 9 * c * first * bins1 + 2.0 * c * 9 * c * frames * bins2 + 2.0 * c * bins2 * c * frames
        return flops, frames


def mel_filters(features: MelFlavour, num_mels: int) -> Tensor:
    return kaldi_mel_banks(num_mels) if features == "kaldi" else slaney_mel_filters(num_mels)


class LogMel(nn.Module):
    """(B, S) waves -> (B, M, N) log-mel frames (normalised when asked), always in fp32 (never autocast)."""

    def __init__(self, features: MelFlavour, num_mels: int, normalize: Normalization) -> None:
        super().__init__()
        self.features, self.normalize = features, normalize
        self.register_buffer("filters", mel_filters(features, num_mels), persistent=False)  # derived, not learned

    def forward(self, wave: Tensor, lengths: Tensor | None) -> Tensor:
        mel_lengths = None if lengths is None else mel_frames(lengths)
        with torch.autocast(device_type=wave.device.type, enabled=False):
            x = log_mel(wave, self.filters, self.features, mel_lengths)
            return normalize_utterance(x, mel_lengths) if self.normalize == "utterance" else x


class WhisperStem(nn.Module):
    def __init__(self, num_mels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(num_mels, width, 3)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2)

    def forward(self, mel: Tensor) -> Tensor:  # (B, M, N) -> (B, T, C)
        x = nn.functional.gelu(self.conv1(mel.transpose(1, 2)))
        return nn.functional.gelu(self.conv2(x)).transpose(1, 2)


class Conv2dStem(nn.Module):
    def __init__(self, num_mels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, stride=2)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2)
        self.linear = nn.Linear(width * _bins_after_conv2d(num_mels), width)

    def forward(self, mel: Tensor) -> Tensor:  # (B, M, N) -> (B, T, C)
        x = nn.functional.relu(self.conv1(mel.unsqueeze(1)))
        x = nn.functional.relu(self.conv2(x))  # (B, C, T, N'')
        return self.linear(x.permute(0, 2, 1, 3).flatten(2))


def check_wave(wave: Tensor, min_samples: int) -> None:
    if wave.ndim != 2:
        raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(wave.shape)}")
    if wave.shape[1] < min_samples:
        raise ValueError(f"waveforms have {wave.shape[1]} samples, fewer than one frame ({min_samples})")


class LogMelFrontend(Frontend):
    def __init__(self, cfg: LogMelFrontendConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = LogMel(cfg.features, cfg.num_mels, cfg.normalize)
        self.stem = (WhisperStem if cfg.stem == "whisper" else Conv2dStem)(cfg.num_mels, cfg.width)
        self.out_channels = cfg.width

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return stem_lengths(lengths, self.cfg.layers)

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, S) waveforms -> (B, T, C) stem frames and (B,) frame lengths (None when `lengths` is None)."""
        check_wave(wave, self.min_samples)
        features = self.stem(self.mel(wave, lengths))
        return features, None if lengths is None else self.output_lengths(lengths)
