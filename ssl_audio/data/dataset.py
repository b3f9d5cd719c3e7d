"""AudioDataset: manifest rows -> mono 16 kHz waves, cropped, with frame labels kept aligned.

Shapes: S samples (16 kHz), L label frames.

A crop offset is a pure function of (seed, epoch, index): every worker, process and resumed run cuts
the same window. With labels, an offset is a whole number of label frames for every label set, so
sample `offset` is the first sample of label frame `offset / hop` (hop = samples per label frame).

With `skip_bad`, a row whose file cannot be used (unreadable, truncated, silent, changed or deleted since
the manifest was built) comes back as a `BadUtterance` instead of raising, so one file costs one utterance.

A row longer than `max_samples` is never decoded whole: its offset is drawn from the manifest's length, then
only that span is read (`AudioSource.read`), so a crop costs the same for a 10 s and a 3 h file. The span is
checked for NaN/Inf; a silent span is fine unless the whole file is silent, and loudness normalisation uses
the whole file's loudness, as `load_audio` does. Both come from one blocked pass over the file
(`measure_audio`), made only when a span is silent or `target_lufs` is set, and kept per worker.
Rows that fit in one crop are loaded whole with `load_audio`, exactly as before.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from ssl_audio.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, is_silent, load_audio, loudness_gain
from ssl_audio.audio_spans import AudioSource, AudioStats, check_stats, measure_audio
from ssl_audio.data.manifest import Manifest

HOP_TOLERANCE = 1e-6  # samples: how far 16 kHz / rate may be from a whole number and still count as one
STATS_CACHE_FILES = 4096  # whole-file measurements kept per worker (a few floats each)


@dataclass(frozen=True, kw_only=True)
class FrameLabels:
    """One integer label per frame for every manifest row (e.g. HuBERT k-means units)."""

    rate: float  # Hz: label frames per second of audio (HuBERT: 100 for MFCC units, 50 for layer units)
    per_utterance: Sequence[np.ndarray | list[int]]  # one 1-D integer sequence per manifest row, in row order
    name: str = "labels"  # names the set in errors; several sets may be used at once
    # The label frames' window and where frame 0's starts, in samples (nn/frontend.py's framing), from the header;
    # None where the file does not say (older headers, fairseq .km files)
    window: int | None = None
    offset: int | None = None

    def __post_init__(self) -> None:
        self.hop  # noqa: B018 -- validates the rate at construction

    @property
    def hop(self) -> int:
        """Samples per label frame at 16 kHz; it must be whole, else crops cannot start on a frame."""
        hop = SAMPLE_RATE / self.rate if self.rate > 0 else math.nan
        if not abs(hop - round(hop)) < HOP_TOLERANCE:  # also catches NaN
            raise ValueError(
                f"label set {self.name!r}: rate {self.rate} Hz must divide {SAMPLE_RATE} Hz into a whole number "
                f"of samples per frame (got {SAMPLE_RATE / self.rate if self.rate > 0 else 'none'})"
            )
        return round(hop)


@dataclass(frozen=True, kw_only=True)
class Item:
    """One utterance (or a crop of it) as the dataset returns it."""

    wave: torch.Tensor  # (S,) float32
    length: int  # S
    index: int  # manifest row
    offset: int = 0  # samples: where `wave` starts in the file
    labels: tuple[torch.Tensor, ...] = ()  # each (L,) long, one per label set: frame j of set k covers
    #   file samples [offset + j * hop_k, offset + (j + 1) * hop_k)
    label_hops: tuple[int, ...] = ()  # samples per label frame, one per label set

    def __post_init__(self) -> None:
        if self.wave.shape != (self.length,):
            raise ValueError(f"item {self.index}: wave of shape {tuple(self.wave.shape)} but length {self.length}")
        if len(self.labels) != len(self.label_hops):
            raise ValueError(f"item {self.index}: {len(self.labels)} label sets but {len(self.label_hops)} hops")


@dataclass(frozen=True, kw_only=True)
class BadUtterance:
    """A manifest row whose audio could not be used, returned in place of its Item (see `skip_bad`)."""

    index: int  # manifest row
    path: str
    reason: str  # AudioError's key: unreadable, empty, silent, too_short, non_finite, changed
    detail: str = ""  # one line

    def __str__(self) -> str:
        return f"row {self.index}: {self.path}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


def label_step(hops: Sequence[int]) -> int:
    """Crop-offset step in samples that lands on a whole frame of every label set (1 without labels)."""
    return math.lcm(*hops) if hops else 1


def crop_offset(excess: int, *, seed: int, epoch: int, index: int, step: int = 1, stream: int = 0) -> int:
    """A uniformly drawn multiple of `step` in [0, excess], fixed by (seed, epoch, index) alone.

    `stream` separates independent draws for the same item (the dataset's crop, then the collator's).
    """
    if excess < 0 or step < 1:
        raise ValueError(f"item {index}: crop needs excess >= 0 and step >= 1, got excess {excess}, step {step}")
    if min(seed, epoch, index, stream) < 0:
        raise ValueError(f"seed {seed}, epoch {epoch}, index {index} and stream {stream} must be non-negative")
    choices = excess // step + 1
    if choices == 1:
        return 0
    # A fresh generator per item: no state shared between workers, call orders or processes.
    return int(np.random.default_rng((seed, epoch, index, stream)).integers(choices)) * step


def crop_item(item: Item, *, offset: int, length: int) -> Item:
    """`item` cut to samples [offset, offset + length), each label set cut to the same span.

    A label set with hop h keeps frames [offset / h, offset / h + round(length / h)), clipped to the
    frames that exist. Cropping to the whole item is the identity (all labels kept).
    """
    if offset == 0 and length == item.length:
        return item
    if offset < 0 or length < 1 or offset + length > item.length:
        raise ValueError(f"item {item.index}: crop [{offset}, {offset + length}) is outside its {item.length} samples")
    labels = crop_labels(item.labels, item.label_hops, offset=offset, length=length, index=item.index)
    # clone: a view would keep (and ship between processes) the whole file's storage
    wave = item.wave[offset : offset + length].clone()  # (length,)
    return replace(item, wave=wave, length=length, offset=item.offset + offset, labels=labels)


def crop_labels(
    labels: Sequence[torch.Tensor], hops: Sequence[int], *, offset: int, length: int, index: int
) -> tuple[torch.Tensor, ...]:
    """Each label set cut to the samples [offset, offset + length), as `crop_item` cuts them."""
    step = label_step(hops)
    if offset % step:
        raise ValueError(f"item {index}: crop offset {offset} is not a multiple of the label frame step {step}")
    return tuple(seq[offset // hop : offset // hop + round(length / hop)].clone() for seq, hop in zip(labels, hops))


class SharedEpoch:
    """An epoch counter in shared memory: persistent DataLoader workers hold their own copy of the dataset
    and the collator, and still see the main process's set_epoch."""

    def __init__(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(epoch)


class AudioDataset(SharedEpoch, Dataset[Item]):
    """Utterances of a manifest at most `max_samples` long: whole with `load_audio`, longer ones as a read span.

    `random_crop` (training) draws the crop offset from (seed, epoch, index); otherwise (eval) it is 0.
    `skip_bad`: return a BadUtterance for a file that raises AudioError (the loader counts and skips it).
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        max_samples: int | None = None,
        random_crop: bool = False,
        seed: int = 0,
        target_lufs: float | None = None,
        labels: Sequence[FrameLabels] | None = None,
        skip_bad: bool = False,
    ) -> None:
        if max_samples is not None and max_samples < MIN_SAMPLES:
            raise ValueError(f"max_samples must be at least {MIN_SAMPLES} (25 ms), got {max_samples}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.labels = tuple(labels or ())
        for label_set in self.labels:
            if len(label_set.per_utterance) != len(manifest):
                raise ValueError(
                    f"label set {label_set.name!r}: {len(label_set.per_utterance)} label sequences "
                    f"but the manifest has {len(manifest)} rows"
                )
        self.manifest = manifest
        self.max_samples = max_samples
        self.random_crop = random_crop
        self.seed = seed
        self.target_lufs = target_lufs
        self.skip_bad = skip_bad
        self.label_hops = tuple(label_set.hop for label_set in self.labels)
        self.crop_step = label_step(self.label_hops)
        self._stats: OrderedDict[tuple, AudioStats | AudioError] = OrderedDict()  # per worker: each has its own
        super().__init__()

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Lengths in samples after cropping: what a batch sampler packs on."""
        if self.max_samples is None:
            return tuple(self.manifest.num_samples)
        return tuple(min(n, self.max_samples) for n in self.manifest.num_samples)

    def __getitem__(self, index: int) -> Item | BadUtterance:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside the manifest's {len(self)} rows")
        expected = self.manifest.num_samples[index]
        cropped = self.max_samples is not None and expected > self.max_samples
        offset = 0
        if cropped and self.random_crop:  # drawn before any audio is read: the span is all that is decoded
            excess = expected - self.max_samples
            offset = crop_offset(excess, seed=self.seed, epoch=self.epoch, index=index, step=self.crop_step)
        try:
            wave = self._load_span(index, offset) if cropped else self._load(index)  # (S,)
        except AudioError as err:
            if not self.skip_bad:
                raise
            detail = " ".join(err.detail.split())  # libsndfile messages may span lines; a log entry must not
            return BadUtterance(index=index, path=err.path, reason=err.reason, detail=detail)
        labels = tuple(self._labels(label_set, index) for label_set in self.labels)
        if not cropped:
            return Item(wave=wave, length=expected, index=index, labels=labels, label_hops=self.label_hops)
        labels = crop_labels(labels, self.label_hops, offset=offset, length=wave.shape[0], index=index)
        return Item(
            wave=wave, length=wave.shape[0], index=index, offset=offset, labels=labels, label_hops=self.label_hops
        )

    def _load(self, index: int) -> torch.Tensor:
        """The row's wave (S,), exactly as long as the manifest says; AudioError otherwise."""
        path = self.manifest.audio_path(index)
        wave = load_audio(path, target_lufs=self.target_lufs)  # (S,)
        expected = self.manifest.num_samples[index]
        if wave.shape[0] != expected:
            raise AudioError(
                path,
                "changed",
                f"loaded {wave.shape[0]} samples but the manifest says {expected}; "
                "the file changed since the manifest was built",
            )
        return wave

    def _load_span(self, index: int, offset: int) -> torch.Tensor:
        """Samples [offset, offset + max_samples) of the row's wave, decoding only those; AudioError otherwise."""
        path = self.manifest.audio_path(index)
        expected = self.manifest.num_samples[index]
        with AudioSource(path) as source:
            if source.num_samples != expected:
                raise AudioError(
                    path,
                    "changed",
                    f"the header gives {source.num_samples} samples but the manifest says {expected}; "
                    "the file changed since the manifest was built",
                )
            wave = source.read(offset, self.max_samples)  # (max_samples,)
        if self.target_lufs is None and not is_silent(float(wave.abs().max())):
            return wave
        stats = self._file_stats(index)  # a silent span of a silent file, or the file's loudness
        if self.target_lufs is None:
            return wave
        return wave * loudness_gain(stats.lufs, stats.peak, self.target_lufs)

    def _file_stats(self, index: int) -> AudioStats:
        """The whole file measured in blocks and checked as `load_audio` checks it; cached per worker, keyed
        by the file's size and modification time so a rewritten file is measured again."""
        path = self.manifest.audio_path(index)
        try:
            info = os.stat(path)
        except OSError as err:
            raise AudioError(path, "unreadable", err.strerror or str(err)) from None
        key = (index, info.st_size, info.st_mtime_ns)
        if key not in self._stats:
            try:
                self._stats[key] = self._measure(index)
            except AudioError as err:  # kept too: a silent 3 h file is walked once, not at every visit
                self._stats[key] = err
            if len(self._stats) > STATS_CACHE_FILES:
                self._stats.popitem(last=False)
        self._stats.move_to_end(key)
        stats = self._stats[key]
        if isinstance(stats, AudioError):
            raise AudioError(stats.path, stats.reason, stats.detail)
        return stats

    def _measure(self, index: int) -> AudioStats:
        path = self.manifest.audio_path(index)
        stats = measure_audio(path, with_loudness=self.target_lufs is not None)
        check_stats(path, stats)
        expected = self.manifest.num_samples[index]
        if stats.num_samples != expected:
            raise AudioError(
                path,
                "changed",
                f"loaded {stats.num_samples} samples but the manifest says {expected}; "
                "the file changed since the manifest was built",
            )
        return stats

    @staticmethod
    def _labels(label_set: FrameLabels, index: int) -> torch.Tensor:
        seq = torch.as_tensor(np.asarray(label_set.per_utterance[index]), dtype=torch.long)  # (L,)
        if seq.ndim != 1:
            raise ValueError(
                f"label set {label_set.name!r}, row {index}: expected a 1-D sequence, got {tuple(seq.shape)}"
            )
        return seq
