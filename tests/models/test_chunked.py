"""frames_in_chunks: long audio framed chunk by chunk must give the frames of the whole utterance.

Oracles: a per-frame function (statistics of each window) computed on the whole wave, and the closed-form
frame count floor((S - window) / hop) + 1. A context-dependent function (MFCC + deltas) must agree away
from the chunk seams, and everywhere once the context covers the deltas' reach.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ssl_audio.features import mfcc_features
from ssl_audio.models.chunked import frames_in_chunks, num_frames

DELTA_REACH = 4  # frames: delta (window 5) of a delta (window 5) reads 2 + 2 frames on each side


def window_stats(window: int, hop: int):  # noqa: ANN201
    """A per-frame function: (S,) -> (T, 3) mean, max and first sample of every window."""

    def fn(segment: Tensor) -> Tensor:
        if segment.shape[-1] < window:
            return segment.new_zeros((0, 3))
        frames = segment.unfold(0, window, hop)  # (T, window)
        return torch.stack([frames.mean(-1), frames.amax(-1), frames[:, 0]], dim=-1)

    return fn


def oracle_count(num_samples: int, window: int, hop: int) -> int:
    return 0 if num_samples < window else (num_samples - window) // hop + 1


def lengths_to_try(window: int, hop: int, per_chunk: int) -> list[int]:
    """Lengths around every multiple of the hop up to several chunks, plus ones shorter than a chunk or a frame."""
    lengths = {1, window - 1, window, window + 1}
    for frames in [*range(1, 3 * per_chunk + 3), 5 * per_chunk, 5 * per_chunk + 1, 7 * per_chunk - 1]:
        last_start = (frames - 1) * hop  # first sample of the last frame
        for delta in (-1, 0, 1, hop - 1):
            lengths.add(last_start + window + delta)
    return sorted(n for n in lengths if n > 0)


@pytest.mark.parametrize(
    ("window", "hop", "chunk_samples", "context_samples"),
    [
        (400, 160, 1600, 320),  # MFCC framing, chunks of 10 frames, 2 frames of context
        (400, 320, 3200, 700),  # conv-extractor framing, context not a multiple of the hop (ceil -> 3 frames)
        (400, 160, 1700, 0),  # chunk not a multiple of the hop, no context
        (25, 10, 10, 5),  # one frame per chunk
    ],
)
def test_per_frame_function_is_exact_for_many_lengths(window: int, hop: int, chunk_samples: int, context_samples: int):
    fn = window_stats(window, hop)
    per_chunk = max(chunk_samples // hop, 1)
    g = torch.Generator().manual_seed(0)
    longest = max(lengths_to_try(window, hop, per_chunk))
    full = torch.randn(longest, generator=g, dtype=torch.float64)
    for n in lengths_to_try(window, hop, per_chunk):
        wave = full[:n]
        expected = fn(wave)
        assert expected.shape[0] == oracle_count(n, window, hop)
        out = frames_in_chunks(
            fn, wave, window=window, hop=hop, chunk_samples=chunk_samples, context_samples=context_samples
        )
        assert out.shape == expected.shape, n
        assert num_frames(n, window, hop) == oracle_count(n, window, hop)
        assert torch.equal(out, expected), n


def test_short_audio_is_one_call_and_long_audio_uses_bounded_segments():
    window, hop, chunk, context = 400, 160, 1600, 320  # 10 frames per chunk, 2 frames of context
    calls: list[int] = []
    stats = window_stats(window, hop)

    def fn(segment: Tensor) -> Tensor:
        calls.append(segment.shape[-1])
        return stats(segment)

    short = torch.randn((10 + 2 * 2 - 1) * hop + window)  # exactly per_chunk + 2 * context frames
    frames_in_chunks(fn, short, window=window, hop=hop, chunk_samples=chunk, context_samples=context)
    assert calls == [short.shape[-1]]

    calls.clear()
    long = torch.randn(100 * hop + window + 17)  # 101 frames
    out = frames_in_chunks(fn, long, window=window, hop=hop, chunk_samples=chunk, context_samples=context)
    assert out.shape[0] == 101
    assert len(calls) == 11  # ceil(101 / 10) chunks
    longest_segment = (10 + 2 * 2 - 1) * hop + window  # a chunk's frames and the context frames on both sides
    assert max(calls) <= longest_segment
    assert sum(calls) < long.shape[-1] * 2  # nothing like quadratic re-computation


def seam_frames(total: int, per_chunk: int, reach: int) -> set[int]:
    """Frames within `reach` of a chunk boundary (where a context-dependent function may differ)."""
    near = set()
    for boundary in range(per_chunk, total, per_chunk):
        near.update(range(max(boundary - reach, 0), min(boundary + reach, total)))
    return near


def test_context_dependent_function_matches_away_from_seams():
    """MFCC + deltas: with 1 frame of context the seams differ, frames DELTA_REACH away from them agree."""
    g = torch.Generator().manual_seed(1)
    n = 160 * 997 + 400 + 77  # 998 frames: just above a multiple of the hop, not of the chunk
    t = torch.arange(n) / 16_000
    wave = (0.3 * torch.sin(2 * torch.pi * 440 * t * (1 + t)) + 0.05 * torch.randn(n, generator=g)).float()
    whole = mfcc_features(wave)
    assert whole.shape == (998, 39)
    chunk = 160 * 100  # 100 frames per chunk
    out = frames_in_chunks(mfcc_features, wave, window=400, hop=160, chunk_samples=chunk, context_samples=160)
    assert out.shape == whole.shape
    near = seam_frames(998, 100, DELTA_REACH)
    away = torch.tensor([i for i in range(998) if i not in near])
    assert (out[away] - whole[away]).abs().max() <= 1e-5  # (torch.testing would import sympy: seconds)
    # The test can see seams: with too little context, the delta-deltas next to a seam differ.
    assert (out[sorted(near)] - whole[sorted(near)]).abs().max() > 1e-3


def test_context_dependent_function_is_close_everywhere_with_enough_context():
    g = torch.Generator().manual_seed(2)
    n = 160 * 1234 + 400 + 1
    wave = (0.1 * torch.randn(n, generator=g)).float()
    whole = mfcc_features(wave)
    out = frames_in_chunks(mfcc_features, wave, window=400, hop=160, chunk_samples=160 * 128, context_samples=3200)
    assert out.shape == whole.shape == (1235, 39)
    assert (out - whole).abs().max() <= 1e-5
