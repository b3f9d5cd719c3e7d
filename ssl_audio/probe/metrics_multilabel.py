"""Multi-label metrics in numpy: average precision per class and its mean (mAP, AudioSet's headline).

AP is sklearn's ``average_precision_score``: the sum over score thresholds (distinct scores, ties taken
together) of the recall gained times the precision there, AP = sum_n (R_n - R_(n-1)) P_n, with no
interpolation. mAP is the unweighted mean over classes that have at least one positive in y_true (a class
without positives has no recall to gain: left out, as AudioSet evaluations skip it).

Shapes: N items, C classes.
"""

from __future__ import annotations

import numpy as np


def average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """AP of (N,) scores against (N,) 0/1 targets with at least one positive."""
    y, s = np.asarray(targets).astype(bool), np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"targets {y.shape} and scores {s.shape} must be 1-D of equal length")
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("average precision needs at least one positive target")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last item of each run of equal scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / positives
    return float(np.sum(recall_gain * precision))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """mAP of (N, C) scores against (N, C) 0/1 targets over the classes with a positive (see the module doc)."""
    y, s = np.asarray(targets), np.asarray(scores)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"targets {y.shape} and scores {s.shape} must be (items, classes) of equal shape")
    present = np.flatnonzero(y.astype(bool).any(axis=0))
    if present.size == 0:
        raise ValueError("no class has a positive target")
    return float(np.mean([average_precision(y[:, c], s[:, c]) for c in present]))


def micro_f1(targets: np.ndarray, predicted: np.ndarray) -> float:
    """F1 over every (item, class) decision: 2 tp / (true + predicted positives); 0 when both are empty."""
    y, p = np.asarray(targets).astype(bool), np.asarray(predicted).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"targets {y.shape} and predictions {p.shape} must have equal shapes")
    total = int(y.sum() + p.sum())
    return 2.0 * int((y & p).sum()) / total if total else 0.0
