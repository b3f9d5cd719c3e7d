"""frames: a phone per frame from alignments (ssl_audio.data.alignments). A linear head per frame; frame
accuracy, macro-F1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_audio.data.alignments import frame_labels, load_alignments
from ssl_audio.data.probe_table import ProbeTable
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.featurizer import Featurizer
from ssl_audio.probe.heads import FrameBank, pad_frames
from ssl_audio.probe.metrics import accuracy, macro_f1
from ssl_audio.probe.task import Outcome, ProbeTask, Targets
from ssl_audio.probe.tasks.training import EVAL_BATCH, fit_head, frame_stats, mixed_weights, new_head


def _alignment_of(alignments: dict, table: ProbeTable, i: int, source: str) -> Any:
    """Alignments are keyed by path relative to their file's folder; the tsv's own path string also works."""
    relative = os.path.relpath(table.audio_path(i).resolve(), Path(source).resolve().parent).replace(os.sep, "/")
    for key in (relative, table.paths[i]):
        if key in alignments:
            return alignments[key]
    raise ValueError(f"{table.where(i)}: {table.paths[i]!r} has no alignment in {source}")


def targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    """The phone of every frame of every row, at the featurizer's frame rate; test phones must occur in training."""
    if cfg.alignments is None:
        raise ValueError("the frames task needs --alignments (alignments.jsonl of the corpus)")
    alignments = load_alignments(cfg.alignments)
    labels = {}  # split -> the phone of every frame of every row
    for split, table in (("train", train), ("test", test)):
        rows = (_alignment_of(alignments, table, i, cfg.alignments) for i in range(len(table)))
        labels[split] = [frame_labels(alignment, featurizer.frame_rate, featurizer.window) for alignment in rows]
    classes = tuple(sorted({phone for row in labels["train"] for phone in row}))
    index = {name: c for c, name in enumerate(classes)}
    for i, row in enumerate(labels["test"]):
        unseen = sorted(set(row) - set(index))
        if unseen:
            raise ValueError(f"{test.where(i)}: phone(s) {', '.join(unseen)} never occur in the training alignments")
    return Targets(
        column=str(cfg.alignments),
        names=classes,
        train=[np.array([index[p] for p in row], dtype=np.int64) for row in labels["train"]],
        test=[np.array([index[p] for p in row], dtype=np.int64) for row in labels["test"]],
        test_labels=[],
    )


def check_frame_counts(
    targets: Targets, train_table: ProbeTable, train: list[np.ndarray], test_table: ProbeTable, test: list[np.ndarray],
    frame_rate: float,
) -> None:  # fmt: skip
    """Every row needs exactly one label per feature frame."""
    for table, features, labels in ((train_table, train, targets.train), (test_table, test, targets.test)):
        for i, (feats, row) in enumerate(zip(features, labels)):
            if feats.shape[1] != len(row):
                raise ValueError(
                    f"{table.where(i)}: {feats.shape[1]} feature frames but {len(row)} frame labels at "
                    f"{frame_rate:g} Hz (the alignment does not describe this audio)"
                )


def evaluate(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Linear classifier of every frame against its aligned phone."""
    mean, std = frame_stats(train)
    head = new_head(cfg, mean, std, len(targets.names), device)

    bank = FrameBank(train)  # once: each batch is then one gather

    def batch_loss(idx: Tensor) -> Tensor:
        x, lengths = bank.batch(idx, device)  # (B, T, K, D)
        y = torch.full(x.shape[:2], -100, dtype=torch.long)  # (B, T): padding is ignored
        for b, i in enumerate(idx.tolist()):
            y[b, : len(targets.train[i])] = torch.from_numpy(targets.train[i])
        return nn.functional.cross_entropy(head(x).flatten(0, 1), y.flatten().to(device), ignore_index=-100)

    losses = fit_head(cfg, head, len(train), batch_loss)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(test), EVAL_BATCH):
            x, lengths = pad_frames(test[start : start + EVAL_BATCH], device)
            best = head(x).argmax(dim=-1).cpu().numpy()  # (B, T)
            predicted += [row[:n] for row, n in zip(best, lengths.tolist())]
    truth, predicted = np.concatenate(targets.test), np.concatenate(predicted)
    metrics = {
        "accuracy": accuracy(truth, predicted),
        "macro_f1": macro_f1(truth, predicted, labels=list(range(len(targets.names)))),
    }
    details = {"test_frames": int(truth.size), "classes": len(targets.names)}
    return Outcome(metrics=metrics, losses=losses, details=details, layer_weights=mixed_weights(head, mean))


# label_column None: the labels are the alignments file's
TASK = ProbeTask(
    name="frames",
    headline="accuracy",
    label_column=None,
    epochs=50,
    lr=1e-2,
    targets=targets,
    evaluate=evaluate,
    check_features=check_frame_counts,
)
