"""BucketBatchSampler: batches of similar-length utterances under a bound on the padded batch size.

A batch of B utterances padded to its longest, S_max, costs B * S_max samples of compute; the bound is
on that, not on the real audio. Sorting by length before packing keeps S_max close to every length.

Every rank builds the same global batch list from (seed, epoch), evens its count to a multiple of the
world size without dropping or repeating an utterance, and takes every world_size-th batch.

A run resumed on another number of processes (`state_for_world`) finishes the epoch it was in with the batches
every old rank had still to yield, in their global order, evened out again for the new world size: each
utterance still comes exactly once per epoch, and the split depends on the saved positions alone. The state
keeps those hand-overs (`segments`: [world size, each rank's position]) until the epoch ends, so the rest of the
epoch can be rebuilt after further resumes; the next epoch is the new world size's own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from ssl_audio.audio import SAMPLE_RATE

STATE_KEYS = ("epoch", "seed", "position", "rank", "world_size", "num_items", "fingerprint")


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; each utterance exactly once per epoch over all ranks.

    lengths: effective size of each item in samples (after cropping).
    max_batch_seconds: bound on len(batch) * max length in batch, in seconds of 16 kHz audio.
    bucketing: pack in length order; False packs in random order (a baseline for benchmarks).
    num_buckets: 0 sorts exactly (random tie-break); k > 0 sorts into k equal-count length buckets and
        shuffles inside each, so batches mix differently every epoch at some cost in padding.
    shuffle: shuffle ties, buckets, packing order and batch order by (seed, epoch); False is deterministic
        length order (eval).
    max_batch_size: optional cap on utterances per batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        max_batch_seconds: float,
        bucketing: bool = True,
        num_buckets: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (N,)
        self.max_batch_samples = round(max_batch_seconds * SAMPLE_RATE)
        n = len(self.lengths)
        if self.lengths.ndim != 1 or n == 0:
            raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {self.lengths.shape}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if n < world_size:
            raise ValueError(f"{n} items cannot give each of {world_size} ranks a batch")
        if num_buckets < 0 or seed < 0:
            raise ValueError(f"num_buckets and seed must be non-negative, got {num_buckets} and {seed}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if (bad := np.flatnonzero(self.lengths < 1)).size:
            raise ValueError(f"item {bad[0]} has length {self.lengths[bad[0]]}; lengths must be positive")
        if (bad := np.flatnonzero(self.lengths > self.max_batch_samples)).size:
            raise ValueError(
                f"item {bad[0]} alone has {self.lengths[bad[0]]} samples, more than the batch bound of "
                f"{self.max_batch_samples} ({max_batch_seconds} s); raise max_batch_seconds or crop shorter"
            )
        self.bucketing = bucketing
        self.num_buckets = num_buckets
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.max_batch_size = max_batch_size
        self._epoch = 0
        self._position = 0  # batches of this epoch handed out on this rank
        self._resuming = False  # the next __iter__ continues from _position (set by load_state_dict)
        self._segments: list[list[Any]] = []  # this epoch's hand-overs from other world sizes: [[world, positions]]
        self._cache: tuple[Any, list[list[int]]] | None = None  # (epoch and segments, this rank's batches)

    # -- epochs and resuming -------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> int:
        """Batches of the current epoch already yielded on this rank."""
        return self._position

    @property
    def start_position(self) -> int:
        """Where the next __iter__ starts: the loaded position once after load_state_dict, else 0."""
        return self._position if self._resuming else 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's batch order. The current epoch is kept as is, so a loaded resume survives."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if epoch != self._epoch:
            self._epoch, self._position, self._resuming, self._segments = epoch, 0, False, []

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "seed": self.seed,
            "position": self._position,
            "rank": self.rank,  # informative: ranks move in lockstep, so any rank's position fits all
            "world_size": self.world_size,
            "num_items": len(self.lengths),
            "fingerprint": self.fingerprint(),
            "segments": [[world, list(positions)] for world, positions in self._segments],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next __iter__ yield exactly the batches of state's epoch not yet yielded."""
        if missing := [key for key in STATE_KEYS if key not in state]:
            raise ValueError(f"sampler state lacks {', '.join(missing)}")
        mine = self.state_dict()
        for key in ("seed", "world_size", "num_items", "fingerprint"):  # a different batch list: positions mean nothing
            if state[key] != mine[key]:
                raise ValueError(f"sampler state has {key} {state[key]!r} but this sampler has {mine[key]!r}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0:
            raise ValueError(f"sampler state has epoch {epoch}; epochs are non-negative")
        segments = [[int(world), [int(p) for p in positions]] for world, positions in state.get("segments", ())]
        if bad := [s for s in segments if s[0] < 1 or len(s[1]) != s[0] or min(s[1]) < 0]:
            raise ValueError(f"sampler state has segment {bad[0]}: need [world size, one position per rank]")
        self._epoch, self._segments = epoch, segments
        if not 0 <= position <= (count := len(self._rank_batches(epoch))):
            raise ValueError(f"sampler state has position {position}, outside epoch {epoch}'s {count} batches")
        self._position, self._resuming = position, True

    def state_for_world(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """This rank's state continuing `states` (one per rank of a run on another world size, by rank)."""
        world = len(states)
        if world < 1 or [int(s["rank"]) for s in states] != list(range(world)):
            raise ValueError(f"need one sampler state per rank 0..{world - 1}, got ranks {[s['rank'] for s in states]}")
        first = states[0]
        for state in states:
            for key in ("epoch", "seed", "num_items", "world_size", "segments"):
                if state.get(key) != first.get(key):
                    raise ValueError(
                        f"sampler states of ranks 0 and {state['rank']} differ in {key} ({first.get(key)!r} vs "
                        f"{state.get(key)!r}): cannot tell what the epoch has left"
                    )
        if int(first["world_size"]) != world:
            raise ValueError(f"{world} sampler states, but they were saved with world_size {first['world_size']}")
        for key, mine in (
            ("seed", self.seed),
            ("num_items", len(self.lengths)),
            ("fingerprint", self._fingerprint(world)),
        ):
            if first[key] != mine:
                raise ValueError(f"sampler state has {key} {first[key]!r} but this sampler has {mine!r}")
        segments = [*first.get("segments", ()), [world, [int(s["position"]) for s in states]]]
        return {**first, "rank": self.rank, "world_size": self.world_size, "fingerprint": self.fingerprint(),
                "position": 0, "segments": segments}  # fmt: skip

    def fingerprint(self) -> str:
        """Hash of everything but (seed, epoch) that decides the batch list."""
        return self._fingerprint(self.world_size)

    def _fingerprint(self, world_size: int) -> str:
        """The fingerprint the same sampler would have on `world_size` ranks."""
        config = (self.max_batch_samples, self.bucketing, self.num_buckets, self.shuffle, self.max_batch_size)
        digest = hashlib.sha1(self.lengths.tobytes())
        digest.update(repr((config, world_size)).encode())
        return digest.hexdigest()[:16]

    # -- iteration -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rank_batches(self._epoch))

    def __iter__(self) -> Iterator[list[int]]:
        start = self.start_position
        self._position = start  # reads right before the first draw; the resume itself is spent at that draw
        return self._yield_from(self._rank_batches(self._epoch), start)

    def _yield_from(self, batches: list[list[int]], start: int) -> Iterator[list[int]]:
        # The reset happens at the first draw, not at iter(): a DataLoader with workers calls iter() on its
        # batch sampler once more than it consumes, and that discarded call must not use up a pending resume.
        self._position, self._resuming = start, False
        for batch in batches[start:]:
            self._position += 1  # before yielding: a state saved while the batch is in use counts it as done
            yield batch

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        key = (epoch, repr(self._segments))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.epoch_batches(epoch)[self.rank :: self.world_size])
        return self._cache[1]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of `epoch` as this sampler serves them: the global list, or after hand-overs from
        other world sizes (the loaded `segments`), what each left, evened out for the next world size."""
        if not self._segments:
            return self.global_batches(epoch)
        batches = self.global_batches(epoch, world_size=self._segments[0][0])
        for i, (world, positions) in enumerate(self._segments):
            # Rank r of that world held global batches r, r + world, ...: the k-th of them is left if k >= its position.
            left = [b for g, b in enumerate(batches) if g // world >= positions[g % world]]
            next_world = self._segments[i + 1][0] if i + 1 < len(self._segments) else self.world_size
            batches = self._even_out(left, next_world)
        return batches

    def global_batches(self, epoch: int, *, world_size: int | None = None) -> list[list[int]]:
        """All ranks' batches of `epoch`, in order; rank r takes batches r, r + world_size, ..."""
        rng = np.random.default_rng((self.seed, epoch))
        batches = self._even_out(self._pack(self._order(rng)), world_size or self.world_size)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        """Item indices in the order they are packed."""
        n = len(self.lengths)
        if not self.bucketing:
            return rng.permutation(n) if self.shuffle else np.arange(n)
        if not self.shuffle:
            return np.argsort(self.lengths, kind="stable")
        if self.num_buckets == 0:
            # A stable sort of a random permutation: length order, ties in random order.
            perm = rng.permutation(n)
            return perm[np.argsort(self.lengths[perm], kind="stable")]
        buckets = np.array_split(np.argsort(self.lengths, kind="stable"), self.num_buckets)
        return np.concatenate([rng.permutation(bucket) for bucket in buckets])

    def _fits(self, size: int, longest: int) -> bool:
        return size * longest <= self.max_batch_samples and (self.max_batch_size is None or size <= self.max_batch_size)

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """Greedy: add items in `order` to the current batch while its padded size stays in bounds."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index, length in zip(order.tolist(), self.lengths[order].tolist()):
            if current and not self._fits(len(current) + 1, max(longest, length)):
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, length)
        batches.append(current)
        return batches

    def _even_out(self, batches: list[list[int]], size: int) -> list[list[int]]:
        """Make the batch count a multiple of `size` (the world size): split the largest batches (never breaks
        the bound), or, when that would need more batches than items, merge pairs that still fit."""
        items = sum(len(b) for b in batches)
        up = -(-len(batches) // size) * size
        if up <= items:
            while len(batches) < up:  # a multi-item batch exists while batches < items
                i = max(range(len(batches)), key=lambda j: len(batches[j]))  # first of the largest
                half = len(batches[i]) // 2
                batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
            return batches
        down = len(batches) // size * size
        while len(batches) > down:
            pair = self._cheapest_merge(batches)
            if pair is None:
                raise ValueError(
                    f"cannot make {len(batches)} batches of {items} items a multiple of world_size "
                    f"{size} within {self.max_batch_samples} samples per batch; raise max_batch_seconds"
                )
            i, j = sorted(pair)
            batches[i] = batches[i] + batches.pop(j)
        return batches

    def _cheapest_merge(self, batches: list[list[int]]) -> tuple[int, int] | None:
        """The pair of batches whose union has the smallest padded size within the bound, if any."""
        longest = [int(self.lengths[b].max()) for b in batches]
        best, best_cost = None, None
        smallest = None  # among batches with a shorter (or equal) longest item: the one with fewest items
        for j in sorted(range(len(batches)), key=lambda k: longest[k]):
            # Pairing j with the smallest shorter batch is the cheapest and the likeliest to fit.
            if smallest is not None:
                size = len(batches[smallest]) + len(batches[j])
                cost = size * longest[j]
                if self._fits(size, longest[j]) and (best_cost is None or cost < best_cost):
                    best, best_cost = (smallest, j), cost
            if smallest is None or len(batches[j]) < len(batches[smallest]):
                smallest = j
        return best
