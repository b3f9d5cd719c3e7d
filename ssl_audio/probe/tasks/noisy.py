"""noisy: was noise added to this clip? Clean-vs-noisy discrimination of utterances, from the `snr_db` column
(`inf` or `clean`: clean; a number of dB: noisy), as the SNR tables of ssl_audio.demo.snr_tables write it.

A linear head on mean+std pooled frames (or the statistics-pooling head, `head: stats`) with two classes;
accuracy, and the ROC AUC of the head's noisy-class probability. How much noise-condition information each
layer keeps (`--all-layers`) is the counterpart of the speaker and phone probes: a layer that forgot the noise
scores near 0.5 AUC. With `by_snr`, a bucket of noisy rows only has no AUC: its accuracy is the share detected.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ssl_audio.data.probe_table import SNR_COLUMN, ProbeTable
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.featurizer import Featurizer
from ssl_audio.probe.heads import pool_mean_std
from ssl_audio.probe.metrics import accuracy, roc_curve_points
from ssl_audio.probe.snr import table_snrs
from ssl_audio.probe.task import Outcome, ProbeTask, Targets
from ssl_audio.probe.tasks.stats_training import apply_batched, stats_classifier
from ssl_audio.probe.tasks.training import pooled_classifier

CLASSES = ("clean", "noisy")


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids between the ROC points: a tie of scores counts half)."""
    fpr, tpr, _ = roc_curve_points(scores, targets)
    return float(np.trapezoid(tpr, fpr))


def _conditions(table: ProbeTable, column: str) -> list[int]:
    if column != SNR_COLUMN:
        raise ValueError(f"the noisy task reads the {SNR_COLUMN!r} column, not {column!r}")
    return [0 if math.isinf(snr) else 1 for snr in table_snrs(table)]


def targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    """Class 0 clean, 1 noisy; training needs both (a multi-condition table: clean rows and their noisy copies)."""
    train_codes, test_codes = _conditions(train, cfg.label_column), _conditions(test, cfg.label_column)
    for table, codes in ((train, train_codes), (test, test_codes)):
        if len(set(codes)) < 2:  # training needs both, and so does the AUC
            raise ValueError(
                f"{table.source}: every row is {CLASSES[codes[0]]}; the noisy task needs clean and noisy rows"
            )
    return Targets(
        column=cfg.label_column,
        names=CLASSES,
        train=train_codes,
        test=test_codes,
        test_labels=test.column(SNR_COLUMN),
    )


def evaluate(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """P(noisy) per test clip from a two-class utterance head; accuracy at the argmax, AUC of P(noisy)."""
    if cfg.head == "stats":
        head, losses = stats_classifier(cfg, train, targets.train, len(CLASSES), device)
        logits = apply_batched(head, test, device)  # (N, 2)
    else:
        x_train = np.stack([pool_mean_std(f) for f in train])  # (N, K, 2D)
        head, losses = pooled_classifier(cfg, x_train, targets.train, len(CLASSES), device)
        with torch.no_grad():
            logits = head(torch.from_numpy(np.stack([pool_mean_std(f) for f in test])).to(device)).cpu().numpy()
    truth = np.asarray(targets.test)
    p_noisy = torch.softmax(torch.from_numpy(logits).double(), dim=-1)[:, 1].numpy()
    metrics = {"accuracy": accuracy(truth, logits.argmax(axis=-1))}
    if 0 < truth.sum() < truth.size:  # both conditions present (a bucket of a per-SNR report may hold one)
        metrics["auc"] = roc_auc(p_noisy, truth)
    details = {"test_noisy": int(truth.sum()), "test_clean": int(truth.size - truth.sum())}
    weights = head.mix.weights if train[0].shape[0] > 1 else None
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses, details=details)


TASK = ProbeTask(
    name="noisy",
    headline="auc",
    label_column=SNR_COLUMN,
    epochs=100,
    lr=1e-2,
    targets=targets,
    evaluate=evaluate,
)
