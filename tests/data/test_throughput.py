"""One timed pass over a loader (`ssl-audio data-pass`): counts, audio and padded seconds, throughput, its line.

Oracles: hand-counted samples of hand-made batches with a fake clock; for a real loader over a tiny manifest, the
manifest's own lengths of the rows each batch holds (padded to the longest row of the batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import ssl_audio.data.throughput as throughput
from ssl_audio.data.collate import Batch
from ssl_audio.data.loader import make_file_loader
from ssl_audio.data.manifest import build_manifests, load_manifest
from ssl_audio.data.throughput import loader_pass

SR = 16_000


def _batch(width: int, lengths: list[int]) -> Batch:
    n = len(lengths)
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(waves=torch.zeros(n, width), lengths=torch.tensor(lengths), indices=zeros, offsets=zeros)


HAND = [_batch(8_000, [8_000, 4_000]), _batch(16_000, [16_000, 16_000, 8_000])]


def _clock(monkeypatch: pytest.MonkeyPatch, *times: float) -> None:
    ticks = iter(times)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(ticks))


def test_hand_batches_counts_seconds_padding_and_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _clock(monkeypatch, 10.0, 12.5)
    stats = loader_pass(HAND)
    # audio: 8000 + 4000 + 16000 + 16000 + 8000 = 52000 samples = 3.25 s; computed on: 2 x 8000 + 3 x 16000 = 4 s.
    # Every number is a binary fraction, exact in float64: equality.
    assert (stats.batches, stats.utterances) == (2, 5)
    assert (stats.audio_seconds, stats.batch_seconds, stats.wall_seconds) == (3.25, 4.0, 2.5)
    assert stats.throughput == 3.25 / 2.5
    assert stats.padding_fraction == 1 - 3.25 / 4.0  # 0.1875
    assert stats.line() == "2 batches, 5 utterances, 0.001 h of audio in 2.5 s: 1 audio-s/s, padding 18.8%"


def test_max_batches_stops_without_drawing_another(monkeypatch: pytest.MonkeyPatch) -> None:
    def batches() -> Iterator[Batch]:
        yield HAND[1]
        raise AssertionError("a batch past max_batches was drawn")

    _clock(monkeypatch, 0.0, 4.0)
    stats = loader_pass(batches(), max_batches=1)
    assert (stats.batches, stats.utterances, stats.audio_seconds, stats.batch_seconds) == (1, 3, 2.5, 3.0)
    assert stats.throughput == 2.5 / 4.0 and stats.padding_fraction == 1 - 2.5 / 3.0


def test_empty_loader_gives_zeros_not_a_division_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _clock(monkeypatch, 1.0, 1.0)  # and no time passes
    stats = loader_pass([])
    assert (stats.batches, stats.utterances, stats.audio_seconds, stats.batch_seconds) == (0, 0, 0.0, 0.0)
    assert stats.throughput == 0.0


def test_real_loader_over_a_tiny_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lengths = (3_200, 4_811, 6_400, 8_000, 9_123)
    for i, n in enumerate(lengths):
        sf.write(tmp_path / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), SR, subtype="PCM_16")
    build_manifests([tmp_path], tmp_path / "manifest", valid_fraction=0.0)
    manifest = load_manifest(tmp_path / "manifest" / "train.tsv")
    loader = make_file_loader(manifest, max_samples=None, random_crop=False, max_batch_seconds=1.0, seed=0)
    seen: list[Batch] = []

    def recording() -> Iterator[Batch]:
        for batch in loader:
            seen.append(batch)
            yield batch

    stats = loader_pass(recording())
    rows = [batch.indices.tolist() for batch in seen]
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))  # every row once
    assert len(rows) >= 2  # 2.3 s of audio in batches of at most 1 s: padding across more than one batch
    sizes = manifest.num_samples
    assert (stats.batches, stats.utterances) == (len(rows), len(lengths))
    assert stats.audio_seconds == sum(lengths) / SR  # no crop: every sample, an exact integer sum
    padded = sum(len(row) * max(sizes[i] for i in row) for row in rows)  # "pad" collate: to the longest row
    assert stats.batch_seconds == padded / SR
    assert stats.padding_fraction == pytest.approx(1 - sum(lengths) / padded, abs=1e-15)  # one fp64 division
