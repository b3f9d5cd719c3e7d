"""classify: utterance labels. A linear head on mean+std pooled frames (Adam, cross-entropy), or the statistics-pooling
head over mixed layers (`head: stats`); accuracy, macro-F1. Multi-label tables (a cell lists classes joined by ";")
take the sigmoid head and mAP of tasks/multilabel.py."""

from __future__ import annotations

import numpy as np
import torch

from ssl_audio.data.probe_table import PATH_COLUMN, ProbeTable
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.featurizer import Featurizer
from ssl_audio.probe.heads import pool_mean_std
from ssl_audio.probe.metrics import accuracy, macro_f1
from ssl_audio.probe.task import Outcome, ProbeTask, Targets
from ssl_audio.probe.tasks.labels import class_index, non_empty, training_classes
from ssl_audio.probe.tasks.multilabel import (
    evaluate_multi_label,
    is_multi_label,
    is_multi_label_targets,
    multi_label_targets,
)
from ssl_audio.probe.tasks.stats_training import apply_batched, stats_classifier
from ssl_audio.probe.tasks.training import pooled_classifier


def targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    """Classes of the label column (default: the table's last); every test class must occur in training."""
    column = cfg.label_column or train.columns[-1]
    if column == PATH_COLUMN:
        raise ValueError(f"{train.source}: no label column besides {PATH_COLUMN!r}; name one with --label-column")
    if is_multi_label((train, column), (test, column)):
        return multi_label_targets(train, test, column)
    classes = training_classes(train, column)
    if len(classes) < 2:
        raise ValueError(f"{train.source}: column {column!r} holds a single class {classes[0]!r}")
    return Targets(
        column=column,
        names=classes,
        train=class_index(train, column, classes),
        test=class_index(test, column, classes),
        test_labels=non_empty(test, column),
    )


def evaluate(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Utterance classification from mean+std statistics of every layer, mixed after standardisation (or, with
    `head: stats`, from the statistics of the frames mixed over the layers)."""
    if is_multi_label_targets(targets):
        if cfg.head == "stats":
            raise ValueError("--head stats takes single-label tables; multi-label tables use the sigmoid head")
        return evaluate_multi_label(cfg, train, test, targets, device)
    if cfg.head == "stats":
        return _evaluate_stats(cfg, train, test, targets, device)
    x_train = np.stack([pool_mean_std(f) for f in train])  # (N, K, 2D)
    x_test = torch.from_numpy(np.stack([pool_mean_std(f) for f in test])).to(device)
    head, losses = pooled_classifier(cfg, x_train, targets.train, len(targets.names), device)
    with torch.no_grad():
        predicted = head(x_test).argmax(dim=-1).cpu().numpy()
    metrics = {
        "accuracy": accuracy(targets.test, predicted),
        "macro_f1": macro_f1(targets.test, predicted, labels=list(range(len(targets.names)))),
    }
    weights = head.mix.weights if x_train.shape[1] > 1 else None
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses)


def _evaluate_stats(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    head, losses = stats_classifier(cfg, train, targets.train, len(targets.names), device)
    predicted = apply_batched(head, test, device).argmax(axis=-1)
    metrics = {
        "accuracy": accuracy(targets.test, predicted),
        "macro_f1": macro_f1(targets.test, predicted, labels=list(range(len(targets.names)))),
    }
    weights = head.mix.weights if train[0].shape[0] > 1 else None
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses)


TASK = ProbeTask(
    name="classify",
    headline="accuracy",
    label_column=None,
    epochs=100,
    lr=1e-2,
    targets=targets,
    evaluate=evaluate,
)
