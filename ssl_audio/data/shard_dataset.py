"""make_shard_loader: tar shards (ssl-audio pack-shards) -> the same Batches as make_loader, streamed.

Nothing per utterance touches the file system: the plan (shard_plan.py) comes from index.json, and each
stream opens its shards one at a time and reads them front to back. The loader is a ResumableLoader, so
the training loop drives it as it drives the file loader: set_epoch, len, iteration, state_dict (epoch and
batches delivered), load_state_dict, bad utterances counted and reported alike.

Item k of rank r's epoch is fetched by its position p: stream r * W + p % W, batch p // W of that stream.
DataLoader workers take positions round-robin, so worker w sees exactly one stream and reads it
sequentially. A position out of sequence (a resume, another worker count) costs a re-read, never a wrong
batch: a reader restarts its stream and passes over, without reading or decoding them, the members and
whole shards no batch from there on needs.

Audio is decoded and cropped exactly as AudioDataset does it from the file: the same wave for the same
bytes, the same crop for the same (seed, epoch, row), labels cut to the same frames.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import soundfile as sf
import torch
from torch.utils.data import Dataset, get_worker_info

from ssl_audio.audio import SAMPLE_RATE, AudioError, check_samples, normalize_loudness, resample
from ssl_audio.data.collate import Batch, Collator
from ssl_audio.data.dataset import BadUtterance, FrameLabels, Item, SharedEpoch, crop_item, crop_offset, label_step
from ssl_audio.data.loader import (
    BAD_FRACTION_AFTER,
    MAX_BAD_FRACTION,
    ResumableLoader,
    set_epoch,
    worker_options,
)
from ssl_audio.data.sampler import BucketBatchSampler
from ssl_audio.data.shard_plan import ShardPlanner, StreamPlan
from ssl_audio.data.shards import ShardIndex, load_shard_index, member_stem

READ_BUFFER = 1 << 20  # bytes: sequential reads in large blocks suit network file systems


class ShardError(ValueError):
    """A shard that cannot be read as index.json describes it (truncated, corrupt, repacked meanwhile)."""


@dataclass(frozen=True, kw_only=True)
class ShardFailure:
    """A ShardError raised in a worker, carried to the main process as data: re-raised there as one line
    (torch would re-raise it with the worker's traceback folded into the message)."""

    message: str


def decode_audio(data: bytes, name: str, *, target_lufs: float | None = None) -> torch.Tensor:
    """Encoded file bytes -> (S,) mono float32 at 16 kHz, exactly as `load_audio` reads the file; AudioError
    (naming `name`) for what load_audio would refuse."""
    if not data:
        raise AudioError(name, "empty", "0 bytes")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # (S, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(name, "unreadable", str(err).strip()) from None
    if samples.shape[0] == 0:
        raise AudioError(name, "empty", "no samples")
    channels = torch.from_numpy(samples)  # (S, C)
    if not torch.isfinite(channels).all():
        check_samples(name, channels.T)  # names the NaN count before the downmix spreads it
    wave = resample(channels.mean(dim=1), rate, SAMPLE_RATE)  # (S,)
    check_samples(name, wave)
    if target_lufs is not None:
        wave = normalize_loudness(wave, SAMPLE_RATE, target_lufs)
    return wave.contiguous()


@dataclass(frozen=True, kw_only=True)
class Member:
    """One row as a shard holds it: the encoded audio and its JSON record."""

    row: int
    source: str  # shard path:member name, for messages
    data: bytes
    labels: dict[str, list[int]]


class StreamReader:
    """Reads one stream's shards in order and hands out each batch's members, holding those read ahead."""

    def __init__(self, index: ShardIndex, plan: StreamPlan, lengths: Sequence[int]) -> None:
        self.index = index
        self.plan = plan
        self.lengths = lengths
        self.use = {row: k for k, batch in enumerate(plan.batches) for row in batch}  # row -> its batch
        self.last_use = [max(self.use[row] for row in index.shards[s].rows) for s in plan.shards]
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self._restart()

    def _restart(self) -> None:
        self.close()
        self.next_batch = 0
        self.pending: dict[int, Member] = {}
        self.shard_pos = -1  # position in plan.shards of the open shard
        self.member_pos = 0  # rows of the open shard read or passed over

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._file is not None:
            self._file.close()
        self._tar = self._file = None

    def fetch(self, k: int) -> list[Member]:
        """The members of batch `k` of this stream, in the batch's order."""
        if k < self.next_batch:
            self._restart()
        for row in [row for row in self.pending if self.use[row] < k]:  # batches passed over: drop what they held
            del self.pending[row]
        rows = self.plan.batches[k]
        while any(row not in self.pending for row in rows):
            self._read_row(k)
        self.next_batch = k + 1
        return [self.pending.pop(row) for row in rows]

    def _read_row(self, k: int) -> None:
        """Read the next row of the stream into `pending`, or pass over it where no batch from `k` on needs it."""
        if self._tar is None or self.member_pos == len(self._shard.rows):
            self.close()
            self.shard_pos += 1
            while self.last_use[self.shard_pos] < k:  # a whole shard before the resume point: not even opened
                self.shard_pos += 1
            self._open()
        row = self._shard.rows[self.member_pos]
        self.member_pos += 1
        stem = member_stem(row)
        meta_info = self._next_member(f"{stem}.json")
        audio_info = self._next_member(stem + ".")
        if self.use[row] < k:
            return  # tar.next() seeks past the data: nothing is read
        meta = self._json(meta_info, row)
        self.pending[row] = Member(
            row=row, source=f"{self._path}:{audio_info.name}", data=self._read(audio_info), labels=meta["labels"]
        )

    @property
    def _shard(self):  # the ShardInfo of the open shard
        return self.index.shards[self.plan.shards[self.shard_pos]]

    @property
    def _path(self) -> Path:
        return self.index.shard_path(self.plan.shards[self.shard_pos])

    def _fail(self, what: str) -> ShardError:
        self.close()
        return ShardError(f"{self._path}: {what}; re-run ssl-audio pack-shards for {self.index.folder}")

    def _open(self) -> None:
        path, expected = self._path, self._shard.size
        try:
            self._file = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 -- held open across fetches
        except OSError as err:
            raise ShardError(f"{path}: cannot open shard ({err.strerror}); index {self.index.path}") from None
        size = os.fstat(self._file.fileno()).st_size
        if size != expected:
            raise self._fail(
                f"{'truncated' if size < expected else 'changed'}: {size} bytes, index.json says {expected}"
            )
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:")  # noqa: SIM115 -- closed in close()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise self._fail(f"not a readable tar ({err})") from None
        self.member_pos = 0

    def _next_member(self, prefix: str) -> tarfile.TarInfo:
        try:
            info = self._tar.next()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise self._fail(f"unreadable after member {self.member_pos} of {len(self._shard.rows)} ({err})") from None
        if info is None or not info.name.startswith(prefix) or not info.isfile():
            found = "the end of the shard" if info is None else repr(info.name)
            raise self._fail(f"found {found} where index.json expects member {prefix}*")
        return info

    def _read(self, info: tarfile.TarInfo) -> bytes:
        try:
            return self._tar.extractfile(info).read()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise self._fail(f"member {info.name}: unreadable ({err})") from None

    def _json(self, info: tarfile.TarInfo, row: int) -> dict[str, Any]:
        try:
            meta = json.loads(self._read(info))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise self._fail(f"member {info.name}: not JSON ({err})") from None
        names = {label_set.name for label_set in self.index.labels}
        if (
            not isinstance(meta, dict)
            or meta.get("row") != row
            or meta.get("num_samples") != self.lengths[row]
            or not isinstance(meta.get("labels"), dict)
            or not names <= meta["labels"].keys()
        ):
            raise self._fail(f"member {info.name}: its row, length or label sets differ from index.json's")
        return meta


class ShardDataset(SharedEpoch, Dataset[list[Item | BadUtterance]]):
    """Rank `rank`'s batches of an epoch by position: each item a list of decoded, cropped utterances."""

    def __init__(
        self,
        planner: ShardPlanner,
        *,
        rank: int,
        max_samples: int | None,
        random_crop: bool,
        seed: int,
        target_lufs: float | None = None,
        label_sets: Sequence[str] = (),
    ) -> None:
        packed = {label_set.name: label_set for label_set in planner.index.labels}
        if missing := [name for name in label_sets if name not in packed]:
            raise ValueError(
                f"{planner.index.path}: no label set {missing[0]!r} was packed (packed: {sorted(packed) or 'none'})"
            )
        self.planner = planner
        self.rank = rank
        self.max_samples = max_samples
        self.random_crop = random_crop
        self.seed = seed
        self.target_lufs = target_lufs
        self.label_sets = tuple(label_sets)
        self.label_hops = tuple(FrameLabels(rate=packed[n].rate, per_utterance=(), name=n).hop for n in label_sets)
        self.crop_step = label_step(self.label_hops)
        self.lengths = planner.index.lengths()
        self._readers: dict[tuple[int, int], StreamReader] = {}  # (epoch, stream) -> reader, per process
        super().__init__()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": {}}  # open files stay with the process that opened them

    def __len__(self) -> int:
        return self.planner.batches_per_rank(self.epoch)

    def __getitem__(self, position: int) -> list[Item | BadUtterance] | ShardFailure:
        epoch = self.epoch
        stream, k = self.planner.stream_of(self.rank, position)
        try:
            members = self._reader(epoch, stream).fetch(k)
        except ShardError as err:
            if get_worker_info() is None:
                raise
            return ShardFailure(message=str(err))
        return [self._item(member, epoch) for member in members]

    def _reader(self, epoch: int, stream: int) -> StreamReader:
        if (epoch, stream) not in self._readers:
            for key in [key for key in self._readers if key[0] != epoch]:
                self._readers.pop(key).close()
            plan = self.planner.epoch_plan(epoch)[stream]
            self._readers[epoch, stream] = StreamReader(self.planner.index, plan, self.lengths)
        return self._readers[epoch, stream]

    def _item(self, member: Member, epoch: int) -> Item | BadUtterance:
        expected = self.lengths[member.row]
        try:
            wave = decode_audio(member.data, member.source, target_lufs=self.target_lufs)  # (S,)
            if wave.shape[0] != expected:
                raise AudioError(
                    member.source, "changed", f"decoded {wave.shape[0]} samples but the manifest said {expected}"
                )
        except AudioError as err:
            detail = " ".join(err.detail.split())
            return BadUtterance(index=member.row, path=err.path, reason=err.reason, detail=detail)
        labels = tuple(torch.as_tensor(member.labels[name], dtype=torch.long) for name in self.label_sets)  # (L,)
        item = Item(wave=wave, length=expected, index=member.row, labels=labels, label_hops=self.label_hops)
        if self.max_samples is None or expected <= self.max_samples:
            return item
        offset = 0
        if self.random_crop:  # AudioDataset's draw: the same crop for the same (seed, epoch, row)
            excess = expected - self.max_samples
            offset = crop_offset(excess, seed=self.seed, epoch=epoch, index=member.row, step=self.crop_step)
        return crop_item(item, offset=offset, length=self.max_samples)


class ShardCollator(Collator):
    """collate_fn: the DataLoader hands over [one position's items]; collate them as Collator does."""

    def __call__(self, fetched: Sequence[Any]) -> Batch | ShardFailure:  # type: ignore[override]
        (items,) = fetched
        return items if isinstance(items, ShardFailure) else super().__call__(items)


class ShardBatchSampler(BucketBatchSampler):
    """Positions 0 .. K*W - 1 of a rank's epoch, one per batch, with BucketBatchSampler's epochs and resume
    (the same state keys; the fingerprint is the plan's)."""

    def __init__(self, planner: ShardPlanner, *, rank: int, max_batch_seconds: float) -> None:
        super().__init__(
            planner.sizes.tolist(),
            max_batch_seconds=max_batch_seconds,
            shuffle=planner.shuffle,
            seed=planner.seed,
            rank=rank,
            world_size=planner.world_size,
            max_batch_size=planner.max_batch_size,
        )
        self.planner = planner

    def fingerprint(self) -> str:
        return self.planner.fingerprint

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, [[p] for p in range(self.planner.batches_per_rank(epoch))])
        return self._cache[1]

    def state_for_world(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        raise ValueError(
            f"shard folder: saved on {len(states)} process(es), resuming on {self.world_size}: the shards are split "
            "per rank and loader worker, so a shard run resumes only on the number of processes it was saved with"
        )

    def rank_rows(self, epoch: int) -> list[tuple[int, ...]]:
        """Manifest rows of this rank's batches of `epoch`, in delivery order (from the plan; no audio read)."""
        plans = self.planner.epoch_plan(epoch)
        rows = []
        for position in range(self.planner.batches_per_rank(epoch)):
            stream, k = self.planner.stream_of(self.rank, position)
            rows.append(plans[stream].batches[k])
        return rows


class ShardLoader(ResumableLoader):
    """A ResumableLoader over shards; a shard error from a worker is raised here as its one-line ShardError."""

    def _count(self, batch: Batch | ShardFailure) -> None:
        if isinstance(batch, ShardFailure):
            raise ShardError(batch.message)
        super()._count(batch)


def make_shard_loader(
    shard_dir: str | Path,
    *,
    max_samples: int | None,
    random_crop: bool,
    max_batch_seconds: float,
    shuffle: bool = True,
    max_batch_size: int | None = None,
    collate_mode: str = "pad",
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    label_sets: Sequence[str] | None = None,
    target_lufs: float | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    bad_fraction_after: int = BAD_FRACTION_AFTER,
    shuffle_buffer: int = 512,
    bucket_window: int = 256,
) -> ShardLoader:
    """Batches of this rank's shards, ready for `epoch`; make_file_loader's arguments, and:

    label_sets: names of packed label sets to deliver (None: all that were packed; (): none).
    shuffle_buffer, bucket_window: rows; a worker holds at most their sum of encoded members.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    index = load_shard_index(shard_dir)
    planner = ShardPlanner(
        index, max_samples=max_samples, max_batch_seconds=max_batch_seconds, max_batch_size=max_batch_size,
        shuffle=shuffle, seed=seed, world_size=world_size, streams=max(1, num_workers), shuffle_buffer=shuffle_buffer,
        bucket_window=bucket_window,
    )  # fmt: skip
    sampler = ShardBatchSampler(planner, rank=rank, max_batch_seconds=max_batch_seconds)  # checks rank and sizes
    names = [label_set.name for label_set in index.labels] if label_sets is None else list(label_sets)
    dataset = ShardDataset(
        planner, rank=rank, max_samples=max_samples, random_crop=random_crop, seed=seed, target_lufs=target_lufs,
        label_sets=names,
    )  # fmt: skip
    loader = ShardLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=ShardCollator(collate_mode, seed=seed, random_crop=random_crop),
        **worker_options(num_workers, seed),
        max_bad_fraction=max_bad_fraction,
        bad_fraction_after=bad_fraction_after,
    )
    set_epoch(loader, epoch)
    return loader
