"""Epoch plans for sharded input: which rows each batch holds, from the shard index alone (no audio read).

Streams: each of the R ranks reads W streams (W = DataLoader workers, at least 1), R * W in all. Stream
g = rank * W + w reads shards order[g :: R * W], where `order` permutes the shards by (seed, epoch), and
each of its shards from first member to last. Its rows pass a shuffle buffer (seeded by (seed, epoch, g)),
then are cut into windows of `bucket_window` rows; a window is sorted by length, packed into batches
bounded in padded samples, and its batches are shuffled. Every stream is evened out to the same number of
batches K (by splitting its largest batches), so rank r's batch p is batch p // W of stream r * W + p % W
and every rank has K * W batches. A reader holds at most `shuffle_buffer + bucket_window` members.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.shards import ShardIndex


@dataclass(frozen=True, kw_only=True)
class StreamPlan:
    shards: tuple[int, ...]  # shard numbers, in read order
    batches: tuple[tuple[int, ...], ...]  # manifest rows of each batch, in delivery order


def buffer_shuffle(rows: list[int], size: int, rng: np.random.Generator) -> list[int]:
    """`rows` through a shuffle buffer of `size`: each arriving row replaces (and sends out) a random one."""
    if size <= 1:
        return list(rows)
    slots = rng.integers(0, size, max(len(rows) - size, 0)).tolist()
    buffer, out = list(rows[:size]), []
    for row, slot in zip(rows[size:], slots):
        out.append(buffer[slot])
        buffer[slot] = row
    out.extend(buffer[i] for i in rng.permutation(len(buffer)).tolist())  # the stream ended: drain at random
    return out


class ShardPlanner:
    """Batch plans of every stream for any epoch; the same on every rank and worker."""

    def __init__(
        self,
        index: ShardIndex,
        *,
        max_samples: int | None,
        max_batch_seconds: float,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        world_size: int = 1,
        streams: int = 1,
        shuffle_buffer: int = 512,
        bucket_window: int = 256,
    ) -> None:
        if streams < 1 or world_size < 1 or shuffle_buffer < 0 or bucket_window < 1:
            raise ValueError(
                f"need streams >= 1, world_size >= 1, shuffle_buffer >= 0 and bucket_window >= 1, got {streams}, "
                f"{world_size}, {shuffle_buffer} and {bucket_window}"
            )
        total = world_size * streams
        if len(index.shards) < total:
            raise ValueError(
                f"{index.path}: {len(index.shards)} shards cannot give each of {world_size} ranks x {streams} loader "
                f"workers a shard of its own; repack with --shard-seconds at most {index.seconds / total:.0f} or use "
                "fewer workers"
            )
        self.index = index
        lengths = np.asarray(index.lengths(), dtype=np.int64)
        self.sizes = lengths if max_samples is None else np.minimum(lengths, max_samples)  # (N,) after cropping
        self.max_batch_samples = round(max_batch_seconds * SAMPLE_RATE)
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.world_size = world_size
        self.streams = streams
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.bucket_window = bucket_window
        self._plans: dict[int, tuple[StreamPlan, ...]] = {}

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of everything but (seed, epoch) that decides the plan: resuming under another one is refused."""
        shards = [(s.rows, s.num_samples) for s in self.index.shards]
        config = (
            self.sizes.tolist(), self.max_batch_samples, self.max_batch_size, self.shuffle, self.world_size,
            self.streams, self.shuffle_buffer, self.bucket_window,
        )  # fmt: skip
        return hashlib.sha1(json.dumps([shards, config]).encode()).hexdigest()[:16]

    def batches_per_rank(self, epoch: int) -> int:
        return len(self.epoch_plan(epoch)[0].batches) * self.streams

    def stream_of(self, rank: int, position: int) -> tuple[int, int]:
        """(stream, batch of that stream) of rank `rank`'s batch number `position`."""
        return rank * self.streams + position % self.streams, position // self.streams

    def epoch_plan(self, epoch: int) -> tuple[StreamPlan, ...]:
        """Every stream's plan for `epoch` (all ranks'), kept for the current and the previous epoch."""
        if epoch not in self._plans:
            self._plans = {e: p for e, p in self._plans.items() if e == epoch - 1} | {epoch: self._plan(epoch)}
        return self._plans[epoch]

    def _plan(self, epoch: int) -> tuple[StreamPlan, ...]:
        count = len(self.index.shards)
        order = np.random.default_rng((self.seed, epoch)).permutation(count) if self.shuffle else np.arange(count)
        total = self.world_size * self.streams
        plans = []
        for stream in range(total):
            shards = tuple(order[stream::total].tolist())
            rng = np.random.default_rng((self.seed, epoch, stream))
            rows = [row for shard in shards for row in self.index.shards[shard].rows]
            plans.append((shards, self._batches(buffer_shuffle(rows, self.shuffle_buffer, rng), rng)))
        target = max(len(batches) for _, batches in plans)
        return tuple(
            StreamPlan(shards=shards, batches=tuple(map(tuple, self._even_out(batches, target, epoch, stream))))
            for stream, (shards, batches) in enumerate(plans)
        )

    def _batches(self, rows: list[int], rng: np.random.Generator) -> list[list[int]]:
        batches = []
        for start in range(0, len(rows), self.bucket_window):
            window = np.asarray(rows[start : start + self.bucket_window], dtype=np.int64)
            window = window[np.argsort(self.sizes[window], kind="stable")]  # ties keep the shuffled order
            packed = self._pack(window)
            if self.shuffle:
                packed = [packed[i] for i in rng.permutation(len(packed)).tolist()]
            batches.extend(packed)
        return batches

    def _pack(self, rows: np.ndarray) -> list[list[int]]:
        """Greedy, as BucketBatchSampler packs: add rows while the padded batch stays within the bounds."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for row, size in zip(rows.tolist(), self.sizes[rows].tolist()):
            grown = max(longest, size)
            over = (len(current) + 1) * grown > self.max_batch_samples or (
                self.max_batch_size is not None and len(current) + 1 > self.max_batch_size
            )
            if current and over:
                batches.append(current)
                current, grown = [], size
            current.append(row)
            longest = grown
        batches.append(current)
        return batches

    def _even_out(self, batches: list[list[int]], target: int, epoch: int, stream: int) -> list[list[int]]:
        """Split the largest batches until there are `target`: ranks must take equal steps, and a rank's batch p
        must be its stream's batch p // W. Splitting never breaks the bound nor moves a row out of its window."""
        rows = sum(len(b) for b in batches)
        if rows < target:
            rank, worker = divmod(stream, self.streams)
            raise ValueError(
                f"{self.index.path}: epoch {epoch}: the shards of rank {rank}, worker {worker} hold {rows} utterances, "
                f"fewer than the {target} batches of the fullest stream; repack into a multiple of "
                f"{self.world_size * self.streams} shards of equal size (--shard-seconds), or raise max_batch_seconds"
            )
        batches = list(batches)
        while len(batches) < target:
            i = max(range(len(batches)), key=lambda j: len(batches[j]))  # first of the largest
            half = len(batches[i]) // 2
            batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
        return batches
