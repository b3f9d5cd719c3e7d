"""classify on multi-label tables: a label cell lists several classes joined by MULTI_LABEL_SEPARATOR
("chirp;speech", as the demo corpus's events_multi_*.tsv). Linear head on mean+std pooled frames with one
sigmoid per class (binary cross-entropy, AudioSet / SSAST style); mAP, micro-F1 at 0.5, and the share of
clips whose top-scoring class is one of theirs. `classify` takes this path when any cell holds the separator.

Shapes: N items, K layers, F pooled feature dimension, C classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssl_audio.data.probe_table import MULTI_LABEL_SEPARATOR, ProbeTable
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.heads import layer_stats, pool_mean_std
from ssl_audio.probe.metrics_multilabel import mean_average_precision, micro_f1
from ssl_audio.probe.task import Outcome, Targets
from ssl_audio.probe.tasks.labels import non_empty
from ssl_audio.probe.tasks.training import fit_head, new_head

THRESHOLD = 0.5  # sigmoid output above which a class counts as present (micro-F1)


def is_multi_label(*tables_and_column: tuple[ProbeTable, str]) -> bool:
    """Whether any cell of the given (table, column) pairs lists several classes."""
    return any(MULTI_LABEL_SEPARATOR in v for table, column in tables_and_column for v in table.column(column))


def _split(table: ProbeTable, column: str) -> list[tuple[str, ...]]:
    rows = []
    for i, cell in enumerate(non_empty(table, column)):
        names = tuple(name.strip() for name in cell.split(MULTI_LABEL_SEPARATOR))
        if not all(names) or len(set(names)) != len(names):
            raise ValueError(f"{table.where(i)}: {column!r} {cell!r} has an empty or repeated class")
        rows.append(names)
    return rows


def _codes(table: ProbeTable, rows: list[tuple[str, ...]], index: dict[str, int], column: str) -> list[tuple[int, ...]]:
    out = []
    for i, names in enumerate(rows):
        unknown = [name for name in names if name not in index]
        if unknown:
            raise ValueError(
                f"{table.where(i)}: class {unknown[0]!r} (column {column!r}) never occurs in the training set"
            )
        out.append(tuple(sorted(index[name] for name in names)))
    return out


def multi_label_targets(train: ProbeTable, test: ProbeTable, column: str) -> Targets:
    """Class-index tuples per row; every test class must occur in training, and there must be two classes."""
    train_rows, test_rows = _split(train, column), _split(test, column)
    classes = tuple(sorted({name for names in train_rows for name in names}))
    if len(classes) < 2:
        raise ValueError(f"{train.source}: column {column!r} holds a single class {classes[0]!r}")
    index = {name: i for i, name in enumerate(classes)}
    return Targets(
        column=column,
        names=classes,
        train=_codes(train, train_rows, index, column),
        test=_codes(test, test_rows, index, column),
        test_labels=non_empty(test, column),
    )


def is_multi_label_targets(targets: Targets) -> bool:
    return bool(targets.train) and isinstance(targets.train[0], tuple)


def multi_hot(rows: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """(N, C) float32 0/1."""
    out = np.zeros((len(rows), num_classes), dtype=np.float32)
    for i, codes in enumerate(rows):
        out[i, list(codes)] = 1.0
    return out


def evaluate_multi_label(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """One sigmoid per class on mean+std statistics of every layer, mixed after standardisation."""
    num_classes = len(targets.names)
    x_train = np.stack([pool_mean_std(f) for f in train])  # (N, K, 2D)
    x_test = torch.from_numpy(np.stack([pool_mean_std(f) for f in test])).to(device)
    mean, std = layer_stats(list(x_train))
    head = new_head(cfg, mean, std, num_classes, device)
    inputs = torch.from_numpy(x_train).to(device)
    labels = torch.from_numpy(multi_hot(targets.train, num_classes)).to(device)  # (N, C)
    losses = fit_head(
        cfg,
        head,
        len(x_train),
        lambda idx: nn.functional.binary_cross_entropy_with_logits(head(inputs[idx]), labels[idx]),
    )
    with torch.no_grad():
        scores = torch.sigmoid(head(x_test)).cpu().numpy()  # (N, C)
    truth = multi_hot(targets.test, num_classes)
    top = scores.argmax(axis=1)
    metrics = {
        "mAP": mean_average_precision(truth, scores),
        "micro_f1": micro_f1(truth, scores > THRESHOLD),
        "top1_hit": float(truth[np.arange(len(top)), top].mean()),  # the best class is one of the clip's
    }
    weights = head.mix.weights if x_train.shape[1] > 1 else None
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses, headline="mAP")
