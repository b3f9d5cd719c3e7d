"""Collation: a list of dataset Items -> one padded Batch.

Shapes: B batch, S samples (16 kHz), L label frames.

"pad" pads every wave to the longest with zeros (lengths say where audio ends); "crop" cuts every item
to the shortest (fairseq's choice: no padding, some audio unused), at an offset fixed by (seed, epoch,
index) and snapped to whole label frames by the same `crop_item` the dataset uses.

BadUtterances (files the dataset could not use) are left out of the tensors and listed in `Batch.skipped`;
a batch of nothing but bad files has no rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch.nn.utils.rnn import pad_sequence

from ssl_audio.data.dataset import BadUtterance, Item, SharedEpoch, crop_item, crop_offset, label_step
from ssl_audio.models.hubert import LABEL_PAD  # label value past a sequence's end (the model's "no label")
from ssl_audio.nn.conv_extractor import padding_mask

COLLATE_MODES = ("pad", "crop")
CROP_STREAM = 1  # crop_offset stream: independent of the dataset's crop of the same item (stream 0)


@dataclass(kw_only=True)
class Batch:
    waves: torch.Tensor  # (B, S) float32, zero past each length
    lengths: torch.Tensor  # (B,) long: real samples per row
    indices: torch.Tensor  # (B,) long: manifest rows
    offsets: torch.Tensor  # (B,) long: samples from each file's start to where its row starts
    labels: tuple[torch.Tensor, ...] = ()  # each (B, L) long, LABEL_PAD past each sequence; one per label set
    skipped: tuple[BadUtterance, ...] = ()  # rows of the sampler's batch that could not be loaded (not in B)

    def __len__(self) -> int:
        return self.waves.shape[0]

    @property
    def padding_mask(self) -> torch.Tensor:
        """(B, S) bool, True at padded samples."""
        return padding_mask(self.lengths, self.waves.shape[1])

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) for faster, asynchronous host-to-GPU copies."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn) -> Batch:
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "skipped":  # not tensors
                moved[field.name] = value
                continue
            moved[field.name] = tuple(fn(t) for t in value) if isinstance(value, tuple) else fn(value)
        return Batch(**moved)


class Collator(SharedEpoch):
    """collate_fn for a DataLoader over an AudioDataset; see the module docstring for the modes.

    random_crop: in "crop" mode, draw offsets from (seed, epoch, index); False crops from the start (eval).
    """

    def __init__(self, mode: str = "pad", *, seed: int = 0, random_crop: bool = True) -> None:
        if mode not in COLLATE_MODES:
            raise ValueError(f"collate mode must be one of {COLLATE_MODES}, got {mode!r}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.mode = mode
        self.seed = seed
        self.random_crop = random_crop
        super().__init__()

    def __call__(self, items: Sequence[Item | BadUtterance]) -> Batch:
        if not items:
            raise ValueError("cannot collate an empty batch")
        skipped = tuple(item for item in items if isinstance(item, BadUtterance))
        items = [item for item in items if not isinstance(item, BadUtterance)]
        if not items:
            empty = torch.zeros(0, dtype=torch.long)
            return Batch(waves=torch.zeros(0, 0), lengths=empty, indices=empty, offsets=empty, skipped=skipped)
        for item in items:
            if item.label_hops != items[0].label_hops:
                raise ValueError(
                    f"item {item.index} has label hops {item.label_hops} but item {items[0].index} has "
                    f"{items[0].label_hops}; every item of a batch needs the same label sets"
                )
        if self.mode == "crop":
            shortest = min(item.length for item in items)
            items = [self._crop(item, shortest) for item in items]
        waves = pad_sequence([item.wave for item in items], batch_first=True)  # (B, S), zero padded
        labels = tuple(
            pad_sequence([item.labels[k] for item in items], batch_first=True, padding_value=LABEL_PAD)  # (B, L)
            for k in range(len(items[0].labels))
        )
        return Batch(
            waves=waves,
            lengths=torch.tensor([item.length for item in items], dtype=torch.long),
            indices=torch.tensor([item.index for item in items], dtype=torch.long),
            offsets=torch.tensor([item.offset for item in items], dtype=torch.long),
            labels=labels,
            skipped=skipped,
        )

    def _crop(self, item: Item, length: int) -> Item:
        offset = 0
        if self.random_crop:
            step = label_step(item.label_hops)
            excess = item.length - length
            offset = crop_offset(
                excess, seed=self.seed, epoch=self.epoch, index=item.index, step=step, stream=CROP_STREAM
            )
        return crop_item(item, offset=offset, length=length)
