"""The front-end seam: what turns a waveform into the frames the transformer reads.

Every front-end (today the conv stack; log-mel or patch stems beside it) is a `Frontend`: the encoder builds one
from its tagged config in one place (nn/frontends.py) or is handed one, and every other module asks the encoder
for `hop`, `window`, `offset` and `min_samples` instead of assuming a conv stack.

Framing contract (what chunked stitching, label rates and probes rely on): frame t covers the samples
[offset + t * hop, offset + t * hop + window) of the input, and an input of S samples yields `output_lengths(S)`
frames. `offset` is 0 for unpadded front-ends (the conv stack, the log-mel and patch stems); a centred one starts
before sample 0 (Whisper's: -520, so that frame t is centred on sample 320 t).

Shapes: B batch, S samples, T frames, C front-end channels.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Frontend(nn.Module):
    """(B, S) waveforms and (B,) sample lengths -> (B, T, C) features and (B,) frame lengths."""

    out_channels: int  # C, what the feature projection (and wav2vec 2.0's quantiser) reads
    cfg: Any  # its config dataclass, whose `hop` and `window` the defaults below read

    @property
    def hop(self) -> int:
        """Samples between consecutive frames (320 for the standard conv stack: 50 Hz at 16 kHz)."""
        return self.cfg.hop

    @property
    def window(self) -> int:
        """Samples one frame sees (the receptive field: 400 for the standard conv stack)."""
        return self.cfg.window

    @property
    def offset(self) -> int:
        """Sample where frame 0's window starts: 0 unless the front-end pads before the audio (centred frames)."""
        return 0

    @property
    def min_samples(self) -> int:
        """The shortest input that yields one frame."""
        return self.window

    @property
    def max_samples(self) -> int | None:
        """The longest input it takes (None: any; Whisper's: its 30 s window). Long audio is chunked to fit."""
        return None

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames each input length yields, never negative."""
        raise NotImplementedError

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError
