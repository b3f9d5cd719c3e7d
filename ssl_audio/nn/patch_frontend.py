"""The patch front-end (SSAST / AudioMAE style): 16 x 16 patches of a 128-bin log-mel spectrogram.

Tokens: a learned patch embedding (a conv2d whose stride is the patch) plus a learned embedding of the
patch's frequency band, in time-major order (token t * F + f is time step t, band f). The frame view, which
the trunk, span masking, frame labels, chunked stitching and frame probes see, pools the F patches of one
time step into a frame: the mean of GELU(token). The GELU matters: a mean of linear embeddings would be the
embedding of the band-averaged spectrogram, blind to which band holds the energy.

Framing: a time step covers `patch_time` mel frames (default `patch`: square patches), so 16 x 16 patches give
hop = 16 * 160 = 2560 samples (6.25 Hz) and window = 400 + 15 * 160 = 2800 samples; frame t covers samples
[t * hop, t * hop + window). Narrower patches in time keep a speech frame rate: SSAST's frame-based tokens
(128 bins x 2 frames) did better than its 16 x 16 patches on speech tasks; 16 bins x 4 frames gives 25 Hz.

Shapes: B batch, S samples, M mel frames, N mel bins, T time steps, F bands (N / patch), C channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ssl_audio.checks import fail, require_count
from ssl_audio.nn.frontend import Frontend
from ssl_audio.nn.logmel_frontend import LogMel, Normalization, check_mel_choices, check_wave
from ssl_audio.nn.mel import MelFlavour, TimeLayer, fft_bins, stem_frame_counts, stem_hop, stem_lengths, stem_window


@dataclass(frozen=True, kw_only=True)
class PatchFrontendConfig:
    """Defaults: SSAST / AudioMAE (128 kaldi fbank bins, 16 x 16 patches, 768-wide tokens)."""

    kind: Literal["patch"] = "patch"
    features: MelFlavour = "kaldi"
    num_mels: int = 128
    patch: int = 16  # patches of `patch` bins (and `patch` mel frames, unless patch_time says otherwise)
    patch_time: int | None = None  # mel frames per patch; None: square patches
    dim: int = 768  # token width C (out_channels)
    normalize: Normalization = "utterance"  # SSAST normalises with corpus statistics; here per utterance

    def __post_init__(self) -> None:
        require_count(self, "num_mels", "patch", "dim")
        if self.patch_time is not None:
            require_count(self, "patch_time")
        check_mel_choices(self, self.features, self.normalize)
        if self.num_mels % self.patch:
            fail(self, "num_mels", f"must be a multiple of patch {self.patch}, got {self.num_mels}")

    @property
    def frames_per_patch(self) -> int:
        return self.patch if self.patch_time is None else self.patch_time

    @property
    def layers(self) -> tuple[TimeLayer, ...]:
        return ((self.frames_per_patch, self.frames_per_patch),)

    @property
    def bands(self) -> int:
        return self.num_mels // self.patch

    @property
    def out_channels(self) -> int:
        return self.dim

    @property
    def hop(self) -> int:
        return stem_hop(self.layers)

    @property
    def window(self) -> int:
        return stem_window(self.layers)

    def flops(self, samples: int) -> tuple[float, int]:
        """FLOPs on one input of `samples` (the mel projection and the patch embedding; FFT and pooling are not
        counted, as torch's FlopCounterMode), and the frames (time steps) it yields."""
        mels, frames = stem_frame_counts(samples, self.layers)
        flops = 2.0 * mels * fft_bins(self.features) * self.num_mels
        return flops + 2.0 * self.frames_per_patch * self.patch * self.dim * frames * self.bands, frames


class PatchFrontend(Frontend):
    def __init__(self, cfg: PatchFrontendConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = LogMel(cfg.features, cfg.num_mels, cfg.normalize)
        size = (cfg.frames_per_patch, cfg.patch)  # (time, bins): the mel's (M, N) order
        self.embed = nn.Conv2d(1, cfg.dim, size, stride=size)
        self.band_embedding = nn.Parameter(torch.randn(cfg.bands, cfg.dim) * 0.02)
        self.out_channels = cfg.dim

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return stem_lengths(lengths, self.cfg.layers)

    def tokens(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, S) -> (B, T, F, C) patch tokens (flatten(1, 2) gives the time-major sequence) and (B,) steps."""
        check_wave(wave, self.min_samples)
        mel = self.mel(wave, lengths)  # (B, M, N): time is the conv's height, so its output is (B, C, T, F)
        tokens = self.embed(mel.unsqueeze(1)).permute(0, 2, 3, 1) + self.band_embedding
        return tokens, None if lengths is None else self.output_lengths(lengths)

    @staticmethod
    def frame_view(tokens: Tensor) -> Tensor:
        """(B, T, F, C) tokens -> (B, T, C) frames: the mean over bands of GELU(token)."""
        return nn.functional.gelu(tokens).mean(dim=2)

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        tokens, steps = self.tokens(wave, lengths)
        return self.frame_view(tokens), steps
