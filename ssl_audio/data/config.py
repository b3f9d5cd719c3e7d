"""The data section of a run's config: where the audio is and how it is cut into batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ssl_audio.checks import require_count, require_positive, require_range
from ssl_audio.data.conditions import ConditionsConfig
from ssl_audio.data.mixing import MixingConfig


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the audio is and how it is cut into batches."""

    manifest_dir: str = "data/demo/manifest"  # holds train.tsv and valid.tsv (`ssl-audio manifest`)
    max_samples: int = 250_000  # crop longer utterances (samples at 16 kHz); wav2vec 2.0 BASE: 250k
    max_batch_seconds: float = 87.5  # padded audio per batch per process; wav2vec 2.0 BASE: 1.4M samples
    bucketing: bool = True  # batch utterances of similar length to spend little on padding
    num_buckets: int = 0  # 0: exact length sort; k > 0: k length buckets, shuffled inside
    collate: Literal["pad", "crop"] = "pad"  # pad to the batch maximum, or crop to its minimum (fairseq)
    num_workers: int = 2  # DataLoader worker processes
    target_lufs: float | None = None  # loudness normalisation on load (LUFS); None keeps the file's level
    max_bad_fraction: float = 0.01  # stop once more than this fraction of utterances loaded was unusable (skipped)
    shard_dir: str | None = None  # train from tar shards (`ssl-audio pack-shards train.tsv`) instead of files
    train_labels: tuple[str, ...] = ()  # HuBERT/WavLM: one label file per label set, rows as train.tsv
    valid_labels: tuple[str, ...] = ()  # the same label sets for valid.tsv
    label_rate: float | None = None  # Hz, for headerless fairseq .km label files (ours carry it in their header)
    mixing: MixingConfig = field(default_factory=MixingConfig)  # WavLM's denoising mixtures (training only)
    conditions: ConditionsConfig = field(default_factory=ConditionsConfig)  # reverberation, channel (training only)

    def __post_init__(self) -> None:
        require_count(self, "max_samples")
        require_count(self, "num_buckets", "num_workers", minimum=0)
        require_positive(self, "max_batch_seconds", "label_rate")
        require_range(self, "target_lufs", low=-70, high=0)  # -70 LUFS is the absolute gate of ITU-R BS.1770
        require_range(self, "max_bad_fraction", low=0, high=1, high_open=True)  # 1 would loop on a dead corpus
