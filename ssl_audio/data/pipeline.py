"""`make_loader(source, cfg.data, split=...)`: the one way a run gets its batches, from a manifest or tar shards.

The keyword-level builders stay beside what they build (data/loader.py `make_file_loader`, data/shard_dataset.py
`make_shard_loader`); everything that holds a DataConfig goes through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ssl_audio.data.config import DataConfig
from ssl_audio.data.dataset import FrameLabels
from ssl_audio.data.loader import ResumableLoader, make_file_loader
from ssl_audio.data.manifest import Manifest
from ssl_audio.data.shard_dataset import make_shard_loader

Split = Literal["train", "valid"]


def make_loader(
    source: Manifest | str | Path,
    data: DataConfig,
    *,
    split: Split,
    seed: int,
    rank: int = 0,
    world: int = 1,
    labels: Sequence[FrameLabels] | None = None,
) -> ResumableLoader:
    """The `split` loader that `data` describes, over this rank's share of `source`.

    source: a Manifest, or a shard folder (`ssl-audio pack-shards`; training only: its label sets are those of
    data.train_labels, packed with the shards, so `labels` is for manifests only).
    "train": random crops; bucketing, collation and workers from `data`; a new order each epoch.
    "valid": crops from the start, length-sorted batches in a fixed order, padded, no workers: the same batches
    at every validation.
    """
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    common: dict[str, Any] = {
        "max_samples": data.max_samples,
        "max_batch_seconds": data.max_batch_seconds,
        "seed": seed,
        "rank": rank,
        "world_size": world,
        "target_lufs": data.target_lufs,
        "max_bad_fraction": data.max_bad_fraction,
    }
    if not isinstance(source, Manifest):
        if split != "train" or labels is not None:
            raise ValueError(f"shard folder {source}: shards serve the train split, with their packed label sets")
        label_sets = [Path(p).stem for p in data.train_labels]
        return make_shard_loader(
            source, random_crop=True, collate_mode=data.collate, num_workers=data.num_workers, label_sets=label_sets,
            **common,
        )  # fmt: skip
    if split == "train":
        return make_file_loader(
            source, random_crop=True, bucketing=data.bucketing, num_buckets=data.num_buckets, collate_mode=data.collate,
            num_workers=data.num_workers, labels=labels, **common,
        )  # fmt: skip
    return make_file_loader(
        source, random_crop=False, bucketing=True, shuffle=False, collate_mode="pad", num_workers=0, labels=labels,
        **common,
    )  # fmt: skip
