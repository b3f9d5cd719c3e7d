"""One timed pass over a loader: audio-seconds per wall-second and the share spent on padding."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from tqdm import tqdm

from ssl_audio.audio import SAMPLE_RATE


@dataclass(frozen=True, kw_only=True)
class PassStats:
    batches: int
    utterances: int
    audio_seconds: float  # real audio in the batches
    batch_seconds: float  # B * S summed over batches: what the model computes on
    wall_seconds: float

    @property
    def throughput(self) -> float:
        """Audio-seconds per wall-second."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.audio_seconds / max(self.batch_seconds, 1e-9)

    def line(self) -> str:
        return (
            f"{self.batches} batches, {self.utterances} utterances, {self.audio_seconds / 3600:.3f} h of audio "
            f"in {self.wall_seconds:.1f} s: {self.throughput:.0f} audio-s/s, padding {100 * self.padding_fraction:.1f}%"
        )


def loader_pass(loader: Iterable, *, max_batches: int | None = None, progress: bool = False) -> PassStats:
    """Iterate `loader` (batches with .waves (B, S) and .lengths (B,)) once and time it."""
    batches = utterances = audio = padded = 0
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in tqdm(loader, total=total, disable=not progress, desc="batches", unit="batch"):
        batches += 1
        utterances += int(batch.lengths.numel())
        audio += int(batch.lengths.sum())
        padded += batch.waves.numel()
        if max_batches is not None and batches >= max_batches:
            break
    wall = time.perf_counter() - start
    return PassStats(
        batches=batches,
        utterances=utterances,
        audio_seconds=audio / SAMPLE_RATE,
        batch_seconds=padded / SAMPLE_RATE,
        wall_seconds=wall,
    )
