"""Which label frame each model frame predicts, when labels and front-end frame the audio differently.

Model frame t covers samples [offset + t * hop, offset + t * hop + window) (nn/frontend.py); label frame j covers
[label_offset + j * label_hop, label_offset + j * label_hop + label_window). Frame t takes the label whose centre
is nearest its own centre, the earlier one on a tie:
    j = ceil((offset - label_offset + t * hop + window / 2 - label_window / 2) / label_hop - 1 / 2), at least 0.
For the conv stack (hop 320, window 400, offset 0) and 25 ms labels this is today's rule, label floor(t *
label_rate / frame_rate): 100 Hz labels -> label 2t, 50 Hz -> t, 25 Hz -> floor(t / 2). MFCC labels at 100 Hz
onto the unpadded Whisper stem (hop 320, window 1040) give label 2t + 2, onto the conv2d stem (640, 1360) 4t + 3,
onto 16 x 16 patches (2560, 2800) 16t + 7, onto Whisper's own centred front-end (offset -520) 2t - 1 (label 0 for
t = 0). Labels from a layer of the same front-end (same hop, window and offset) map 1:1.

Shapes: T frames.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE

LABEL_WINDOW = 400  # samples one label frame covers: MFCC's 25 ms, and the conv stack's receptive field


def label_hop(label_rate: float) -> int:
    """Samples per label frame; the rate must divide 16 kHz into whole samples (labels.py checks the files)."""
    hop = SAMPLE_RATE / label_rate
    if abs(hop - round(hop)) > 1e-6:
        raise ValueError(f"label_rate {label_rate:g} Hz is not a whole number of samples per frame at {SAMPLE_RATE}")
    return round(hop)


def label_indices(
    num_frames: int,
    *,
    hop: int,
    window: int,
    label_rate: float,
    label_window: int = LABEL_WINDOW,
    offset: int = 0,
    label_offset: int = 0,
    device=None,  # noqa: ANN001
) -> Tensor:
    """(T,) the label index of each model frame (may run past the labels' end: the caller pads those)."""
    step = label_hop(label_rate)
    t = torch.arange(num_frames, device=device)
    # 2 label_hop (centre offset / label_hop - 1/2), in whole samples
    numerator = 2 * (offset - label_offset) + 2 * t * hop + window - label_window - step
    return (-torch.div(-numerator, 2 * step, rounding_mode="floor")).clamp(min=0)  # ceil division
