"""What a probing task is: one `ProbeTask` record (its defaults and its three functions), and what those functions
exchange with the driver (`Targets`, `Outcome`). Each task's module under ssl_audio/probe/tasks/ defines one.

Shapes: N items, T frames, K layers, D feature dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ssl_audio.data.probe_table import ProbeTable
    from ssl_audio.probe.config import ProbeConfig
    from ssl_audio.probe.featurizer import Featurizer


@dataclass(frozen=True, kw_only=True)
class Targets:
    """Labels of both splits, as the task's head consumes them."""

    column: str  # the tsv column (frames: the alignments file)
    names: tuple[str, ...]  # classes, or the CTC vocabulary without the blank (character i is id i + 1)
    train: list[Any]  # class index, id list (ctc) or (T,) class array (frames) per training row
    test: list[Any]
    test_labels: list[str]  # test labels as written in the tsv (speakers, transcripts)
    trials: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # verify: (enroll row, test row, target)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    metrics: dict[str, float]
    layer_weights: list[float] | None = None  # softmax weights of a weighted sum
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    details: dict[str, Any] = field(default_factory=dict)
    headline: str | None = None  # the metric to plot when the data chose it (classify, multi-label: mAP)


# Every function gets the run's config with epochs, lr and label_column already filled from the record's defaults.
# (cfg, featurizer, train table, test table) -> labels of both splits; bad labels raise here, before any encoding
TargetsFn = Callable[["ProbeConfig", "Featurizer", "ProbeTable", "ProbeTable"], Targets]
# (cfg, train features, test features, targets, device) -> metrics; features are (K', T, D) per row
EvaluateFn = Callable[["ProbeConfig", list[np.ndarray], list[np.ndarray], Targets, "torch.device"], Outcome]
# (targets, train table, train features, test table, test features, frame rate): refuse features that cannot serve
FeatureCheck = Callable[[Targets, "ProbeTable", list[np.ndarray], "ProbeTable", list[np.ndarray], float], None]
# number of layers K (> 1) -> the layer probed when neither a layer nor `weighted` is asked for; None: the weighted sum
LayerRule = Callable[[int], "int | None"]


def weighted_sum(num_layers: int) -> int | None:
    """Trained heads learn their own mix of the layers."""
    return None


def middle_layer(num_layers: int) -> int | None:
    """The middle transformer layer (layer 0 is the transformer input)."""
    return (num_layers - 1) // 2


def no_feature_check(
    targets: Targets, train_table: ProbeTable, train: list[np.ndarray], test_table: ProbeTable, test: list[np.ndarray],
    frame_rate: float,
) -> None:  # fmt: skip
    return None


@dataclass(frozen=True, kw_only=True)
class ProbeTask:
    """One probing task: what the driver needs to know of it, and nothing the driver decides."""

    name: str  # the registry key (ssl_audio.probe.registry) and the `task` of ProbeConfig
    headline: str  # the metric of the per-layer plot
    label_column: str | None  # default label column; None: the task's own rule (the last column, the alignments)
    epochs: int  # default head training epochs
    lr: float  # default Adam learning rate (features are standardised, so one rate serves every source)
    targets: TargetsFn
    evaluate: EvaluateFn
    default_layer: LayerRule = weighted_sum
    check_features: FeatureCheck = no_feature_check
