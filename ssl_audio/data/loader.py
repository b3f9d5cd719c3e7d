"""make_loader: manifest -> DataLoader of Batches (AudioDataset + BucketBatchSampler + Collator)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from ssl_audio.data.collate import Batch, Collator
from ssl_audio.data.dataset import AudioDataset, FrameLabels
from ssl_audio.data.manifest import Manifest
from ssl_audio.data.sampler import BucketBatchSampler


class ResumableLoader(DataLoader):
    """A DataLoader whose state_dict counts the batches the loop has received.

    Workers prefetch, so the sampler has handed out a few batches more than the loop has seen; saving
    the sampler's own position would skip those on resume.
    """

    _epoch: int | None = None  # epoch of the iteration in progress (or last finished)
    _delivered: int = 0  # batches of that epoch the loop has received, counting those before a resume

    def __iter__(self) -> Iterator[Batch]:
        sampler: BucketBatchSampler = self.batch_sampler
        self._epoch, self._delivered = sampler.epoch, sampler.start_position
        for batch in super().__iter__():
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        state = self.batch_sampler.state_dict()
        if self._epoch == state["epoch"]:
            state["position"] = self._delivered
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue `state`'s epoch where it stopped: the next pass yields only the remaining batches."""
        self.batch_sampler.load_state_dict(state)
        set_epoch(self, state["epoch"])
        self._epoch = None  # until the next pass, the loaded position is the state


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select `epoch` for the batch order and every crop; call before iterating each epoch."""
    for part in (loader.batch_sampler, loader.dataset, loader.collate_fn):
        part.set_epoch(epoch)


def make_loader(
    manifest: Manifest,
    *,
    max_samples: int | None,
    random_crop: bool,
    max_batch_seconds: float,
    bucketing: bool = True,
    num_buckets: int = 0,
    shuffle: bool = True,
    max_batch_size: int | None = None,
    collate_mode: str = "pad",
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    labels: Sequence[FrameLabels] | None = None,
    target_lufs: float | None = None,
) -> ResumableLoader:
    """Batches of this rank's share of `manifest`, ready for `epoch` (use set_epoch for the next ones)."""
    dataset = AudioDataset(
        manifest, max_samples=max_samples, random_crop=random_crop, seed=seed, target_lufs=target_lufs, labels=labels
    )
    sampler = BucketBatchSampler(
        dataset.sizes,
        max_batch_seconds=max_batch_seconds,
        bucketing=bucketing,
        num_buckets=num_buckets,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        max_batch_size=max_batch_size,
    )
    loader = ResumableLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collator(collate_mode, seed=seed, random_crop=random_crop),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # worker start-up (imports, fork) once per run, not per epoch
        pin_memory=torch.cuda.is_available(),
        # Its own generator: each new iterator draws a worker seed, which must not advance the global RNG
        # (masking, dropout, Gumbel noise) or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )
    set_epoch(loader, epoch)
    return loader
