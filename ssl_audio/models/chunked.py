"""Framed features of long audio, computed chunk by chunk with context and stitched without a frame lost
or repeated.

Any framing where frame t covers samples [t * hop, t * hop + window) works: the conv extractor and
transformer (window 400, hop 320) and kaldi MFCCs (window 400, hop 160). Chunks start on frame
boundaries, so a chunk's frames are the utterance's frames; each frame is taken from the chunk where it
has `context` samples of audio on both sides (less only at the utterance's own edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def num_frames(num_samples: int, window: int, hop: int) -> int:
    """Frames of an utterance of `num_samples` (0 when shorter than one window)."""
    return max((num_samples - window) // hop + 1, 0)


def frames_in_chunks(
    fn: Callable[[Tensor], Tensor],
    wave: Tensor,
    *,
    window: int,
    hop: int,
    chunk_samples: int,
    context_samples: int,
) -> Tensor:
    """fn((S',) segment) -> (T', D) frames; returns (T, D) for the whole `wave` (S,)."""
    total = num_frames(wave.shape[-1], window, hop)
    per_chunk = max(chunk_samples // hop, 1)  # frames each chunk contributes
    context = math.ceil(context_samples / hop)  # frames of context on each side
    if total <= per_chunk + 2 * context:
        return fn(wave)
    pieces = []
    for first in range(0, total, per_chunk):
        last = min(first + per_chunk, total)  # frames [first, last) come from this chunk
        start = max(first - context, 0) * hop  # samples [start, end) feed it
        end = min(wave.shape[-1], (last - 1 + context) * hop + window)
        frames = fn(wave[start:end])
        offset = start // hop
        pieces.append(frames[first - offset : last - offset])
    out = torch.cat(pieces)
    assert out.shape[0] == total, (out.shape, total)
    return out
