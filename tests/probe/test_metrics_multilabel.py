"""Multi-label metrics against sklearn: average precision per class (with ties), mAP, micro-F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from ssl_audio.probe.metrics_multilabel import average_precision, mean_average_precision, micro_f1


def test_average_precision_hand_case() -> None:
    # ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    # a tie between a positive and a negative at the top counts as one threshold: precision 1/2 there
    assert average_precision(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.2])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.random(200) < 0.3
    targets[0] = True
    scores = np.round(rng.random(200) + 0.5 * targets, 1)  # rounded: many ties
    assert average_precision(targets, scores) == pytest.approx(average_precision_score(targets, scores), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_map_matches_sklearn_macro(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = (rng.random((80, 6)) < 0.25).astype(int)
    targets[0] = 1  # every class has a positive
    scores = rng.random((80, 6)) + 0.7 * targets
    expected = average_precision_score(targets, scores, average="macro")
    assert mean_average_precision(targets, scores) == pytest.approx(expected, rel=1e-12)


def test_map_leaves_out_classes_without_positives() -> None:
    rng = np.random.default_rng(7)
    targets = (rng.random((50, 4)) < 0.3).astype(int)
    targets[0, :3] = 1
    targets[:, 3] = 0  # class 3 never present in the test set
    scores = rng.random((50, 4))
    expected = average_precision_score(targets[:, :3], scores[:, :3], average="macro")
    assert mean_average_precision(targets, scores) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="no class has a positive target"):
        mean_average_precision(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"targets \(3, 2\) and scores \(3,\)"):
        mean_average_precision(np.zeros((3, 2)), np.zeros(3))


def test_micro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    targets, predicted = rng.random((40, 5)) < 0.3, rng.random((40, 5)) < 0.4
    assert micro_f1(targets, predicted) == pytest.approx(f1_score(targets, predicted, average="micro"), rel=1e-12)
    assert micro_f1(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0
