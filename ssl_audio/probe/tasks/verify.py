"""verify: speakers, no training by default. Mean-pooled embeddings centred by the training-set mean, cosine scores
over trial pairs of the test set (or a VoxCeleb-format trial list, `--trials`); EER, minDCF, Recall@K."""

from __future__ import annotations

import numpy as np
import torch

from ssl_audio.data.probe_table import ProbeTable, read_trials
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.featurizer import Featurizer
from ssl_audio.probe.heads import pool_mean
from ssl_audio.probe.metrics import eer, min_dcf, recall_at_k, trial_pairs
from ssl_audio.probe.stats_head import StatsPoolHead
from ssl_audio.probe.task import Outcome, ProbeTask, Targets, middle_layer
from ssl_audio.probe.tasks.labels import class_index, non_empty, training_classes
from ssl_audio.probe.tasks.stats_training import apply_batched, stats_classifier
from ssl_audio.probe.tasks.training import frame_stats, pooled_classifier

RECALL_KS = (1, 5, 10)


def targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    """Test speakers need not occur in training (they usually must not); training speakers serve `weighted`."""
    column = cfg.label_column
    speakers = non_empty(test, column)
    trained = cfg.weighted or cfg.head == "stats"  # layer weights from a speaker classifier
    classes = training_classes(train, column) if trained else ()
    if trained and len(classes) < 2:
        raise ValueError(f"{train.source}: --weighted / --head stats verify learns layer weights from >= 2 speakers")
    train_codes = class_index(train, column, classes, what="speaker") if trained else []
    trials = read_trials(cfg.trials, test) if cfg.trials is not None else None
    return Targets(column=column, names=classes, train=train_codes, test=[], test_labels=speakers, trials=trials)


def evaluate(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Cosine scoring of centred mean embeddings of one layer. With several layers (`weighted`), their weights
    come from a linear speaker classifier trained on the training speakers (the embedding is the standardised,
    mixed layer means, and the classifier itself is discarded): the layers that separate known speakers best
    are trusted for unseen ones. With `head: stats` the embedding is the mean and std of the standardised frames,
    mixed over the layers with the weights of a statistics-pooling speaker classifier (SUPERB ASV style)."""
    if cfg.head == "stats":
        e_train, e_test, weights, losses = _stats_embeddings(cfg, train, test, targets, device)
        return _score(cfg, e_train, e_test, targets, weights, losses)
    e_train = np.stack([pool_mean(f) for f in train])  # (N, K, D)
    e_test = np.stack([pool_mean(f) for f in test])
    weights, losses = None, []
    if e_train.shape[1] > 1:
        head, losses = pooled_classifier(cfg, e_train, targets.train, len(targets.names), device)
        head = head.cpu()
        with torch.no_grad():
            e_train, e_test = (
                head.mix((torch.from_numpy(e) - head.mean) / head.std).numpy() for e in (e_train, e_test)
            )
        weights = head.mix.weights
    else:
        e_train, e_test = e_train[:, 0], e_test[:, 0]  # (N, D)
    return _score(cfg, e_train, e_test, targets, weights, losses)


def _stats_embeddings(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> tuple[np.ndarray, np.ndarray, list[float] | None, list[float]]:
    """(N, 2D) statistics embeddings of both splits; the head is trained only when there are layers to weigh."""
    if train[0].shape[0] > 1:
        head, losses = stats_classifier(cfg, train, targets.train, len(targets.names), device)
        weights = head.mix.weights
    else:  # one layer: the embedding does not depend on anything a classifier would learn
        mean, std = frame_stats(train)
        head, losses, weights = StatsPoolHead(mean, std, 1).to(device), [], None
    return apply_batched(head.pooled, train, device), apply_batched(head.pooled, test, device), weights, losses


def _score(
    cfg: ProbeConfig, e_train: np.ndarray, e_test: np.ndarray, targets: Targets, weights: list[float] | None,
    losses: list[float],
) -> Outcome:  # fmt: skip
    """EER, minDCF and Recall@K of cosine scores between test embeddings (N, F), centred by the training mean."""
    e_test = e_test - e_train.mean(axis=0)  # centring by the training mean removes what every utterance shares
    unit = e_test / np.maximum(np.linalg.norm(e_test, axis=1, keepdims=True), 1e-12)
    if targets.trials is not None:
        i, j, trial_targets = targets.trials
    else:
        i, j, trial_targets = trial_pairs(targets.test_labels, max_pairs=cfg.max_trials, seed=cfg.seed)
    scores = (unit[i] * unit[j]).sum(axis=1)  # cosine similarity per trial
    rate, threshold = eer(scores, trial_targets)
    metrics = {
        "eer": rate,
        "min_dcf": min_dcf(scores, trial_targets, p_target=cfg.p_target, c_miss=cfg.c_miss, c_fa=cfg.c_fa),
    }
    metrics |= {f"recall@{k}": v for k, v in recall_at_k(e_test, targets.test_labels, RECALL_KS).items()}
    details = {"eer_threshold": threshold, "trials": int(len(scores)), "target_trials": int(trial_targets.sum())}
    return Outcome(metrics=metrics, layer_weights=weights, losses=losses, details=details)


# epochs and lr serve only `weighted`, whose layer weights come from a speaker classifier
TASK = ProbeTask(
    name="verify",
    headline="eer",
    label_column="speaker",
    epochs=100,
    lr=1e-2,
    targets=targets,
    evaluate=evaluate,
    default_layer=middle_layer,
)
