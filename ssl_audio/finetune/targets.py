"""Utterance targets for fine-tuning: transcripts or class labels from a tsv aligned with the manifest.

The tsv is a probe table (data/probe_table.py: a `path` column relative to the tsv, one utterance per line; the
demo corpus's sentences_*.tsv `path speaker transcript`, keywords_*.tsv `path speaker keyword`). Manifest rows
and tsv rows are matched by the audio file. The targets reach the model as the batch's one label tensor, looked up
by manifest row (Batch.indices), padded with LABEL_PAD.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch.nn.utils.rnn import pad_sequence

from ssl_audio.data.collate import Batch
from ssl_audio.data.manifest import Manifest, has_split, inspect_file, split_path, write_manifest
from ssl_audio.data.probe_table import ProbeTable, read_table
from ssl_audio.finetune.vocab import character_vocab, encode, read_vocab
from ssl_audio.models.finetune import LABEL_PAD


@dataclass(frozen=True, kw_only=True)
class TargetsConfig:
    """The `finetune` section of a run: where the targets are and what they are."""

    train: str | None = None  # tsv with a `path` column and `column` (None: not fine-tuning)
    valid: str | None = None  # the same for data.manifest_dir/valid.tsv
    column: str = "transcript"  # demo sentences: transcript; demo keywords: keyword
    kind: Literal["characters", "label", "labels"] = "characters"  # ctc; one class; space-separated classes
    vocab: str | None = None  # characters: a vocabulary file (finetune/vocab.py); labels: class names, one a line
    write_manifests: bool = True  # write data.manifest_dir/{train,valid}.tsv from these tables when absent


def target_vocab(cfg: TargetsConfig) -> tuple[str, ...]:
    """Tokens (characters) or class names, from the vocabulary file or the train tsv."""
    assert cfg.train is not None
    if cfg.vocab is not None:
        if cfg.kind == "characters":
            return read_vocab(cfg.vocab)
        return tuple(line.strip() for line in Path(cfg.vocab).read_text(encoding="utf-8").splitlines() if line.strip())
    values = read_table(cfg.train, check_files=False).column(cfg.column)
    if cfg.kind == "characters":
        return character_vocab(values)
    return tuple(sorted({name for value in values for name in value.split()}))


def _encode_row(value: str, cfg: TargetsConfig, vocab: tuple[str, ...], where: str) -> list[int]:
    if cfg.kind == "characters":
        return encode(value, vocab, where=where)
    names = value.split()
    if cfg.kind == "label" and len(names) != 1:
        raise ValueError(f"{where}: expected one class name in column {cfg.column!r}, got {value!r}")
    index = {name: i for i, name in enumerate(vocab)}
    for name in names:
        if name not in index:
            raise ValueError(f"{where}: class {name!r} is not one of the {len(vocab)} known classes")
    return [index[name] for name in names]


def _key(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


@dataclass(frozen=True, kw_only=True)
class UtteranceTargets:
    """Target ids of every manifest row, and where each came from (`file:line`, for messages)."""

    rows: tuple[tuple[int, ...], ...]
    where: tuple[str, ...]
    paths: tuple[str, ...]  # the audio files

    def attach(self, batch: Batch) -> Batch:
        """The batch with its rows' targets as its one label tensor (B, L), LABEL_PAD past each row's end."""
        seqs = [torch.tensor(self.rows[i], dtype=torch.long) for i in batch.indices.tolist()]
        if not seqs:
            return replace(batch, labels=(torch.zeros(0, 1, dtype=torch.long),))
        padded = pad_sequence(seqs + [torch.zeros(1, dtype=torch.long)], batch_first=True, padding_value=LABEL_PAD)
        return replace(batch, labels=(padded[:-1].to(batch.waves.device),))  # the extra row keeps L >= 1


def load_targets(cfg: TargetsConfig, tsv: str, manifest: Manifest, vocab: tuple[str, ...]) -> UtteranceTargets:
    """The targets of `tsv` for every row of `manifest`; a manifest file missing from the tsv is an error."""
    table = read_table(tsv, check_files=False)
    values = table.column(cfg.column)
    by_file = {_key(table.audio_path(i)): i for i in range(len(table))}
    rows, where = [], []
    for path in manifest.paths:
        i = by_file.get(_key(manifest.root / path))
        if i is None:
            raise ValueError(f"{tsv}: no row for {manifest.root / path} (a row of the manifest)")
        rows.append(tuple(_encode_row(values[i], cfg, vocab, table.where(i))))
        where.append(table.where(i))
    return UtteranceTargets(rows=tuple(rows), where=tuple(where), paths=tuple(manifest.paths))


def too_long(targets: UtteranceTargets, manifest: Manifest, frames_of: Callable[[int], int]) -> list[str]:
    """One line per utterance whose CTC target needs more frames than its audio gives (the model skips them).
    `frames_of(samples)`: the front-end's frame count (ask the encoder, e.g. its `output_lengths`)."""
    lines = []
    for i, row in enumerate(targets.rows):
        needed = len(row) + sum(a == b for a, b in zip(row, row[1:]))  # a blank between repeated tokens
        frames = frames_of(manifest.num_samples[i])
        if needed > frames:
            lines.append(
                f"skipping {manifest.root / manifest.paths[i]} ({targets.where[i]}): its target needs {needed} "
                f"frames, the audio gives {frames}"
            )
    return lines


def write_split_manifests(cfg: TargetsConfig, manifest_dir: str | Path) -> list[Path]:
    """data.manifest_dir/{train,valid}.tsv listing the tables' audio files, where absent. Returns those written."""
    written = []
    for split, tsv in (("train", cfg.train), ("valid", cfg.valid)):
        if tsv is None or has_split(manifest_dir, split):
            continue
        table: ProbeTable = read_table(tsv)
        root = table.root.resolve()
        rows = [
            (table.cells[i][table.columns.index("path")], inspect_file(table.audio_path(i))) for i in range(len(table))
        ]
        Path(manifest_dir).mkdir(parents=True, exist_ok=True)
        write_manifest(split_path(manifest_dir, split), root, rows)
        written.append(split_path(manifest_dir, split))
    return written


def check_uncropped(collate: str, max_samples: int, manifest: Manifest, split: str) -> None:
    """Targets describe whole utterances: a crop would cut the audio under a transcript that stays whole."""
    if collate != "pad":
        raise ValueError("fine-tuning needs whole utterances: set data.collate: pad")
    longest = max(range(len(manifest)), key=manifest.num_samples.__getitem__)
    if manifest.num_samples[longest] > max_samples:
        raise ValueError(
            f"{manifest.root / manifest.paths[longest]} ({split}): {manifest.num_samples[longest]} samples exceed "
            f"data.max_samples={max_samples}; fine-tuning needs whole utterances, raise data.max_samples"
        )
