"""Head training the tasks share: a seeded linear probe, the fit with the run's epochs and learning rate, a pooled
classifier, frame statistics, and the learned layer weights.

Shapes: N items, K layers, F pooled feature dimension, D frame feature dimension.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.heads import LinearProbe, fit, layer_stats

EVAL_BATCH = 64  # utterances per forward pass at test time


def new_head(cfg: ProbeConfig, mean: Tensor, std: Tensor, num_outputs: int, device: torch.device) -> LinearProbe:
    """A LinearProbe initialised from `cfg.seed`."""
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(cfg.seed)
        return LinearProbe(mean, std, num_outputs).to(device)


def fit_head(cfg: ProbeConfig, head: nn.Module, num_items: int, batch_loss: Callable[[Tensor], Tensor]) -> list[float]:
    """`fit` with the run's settings; `cfg` comes from the driver, its epochs and lr filled from the task's record."""
    return fit(head, num_items, batch_loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)


def pooled_classifier(
    cfg: ProbeConfig, x: np.ndarray, y: list[int], num_classes: int, device: torch.device
) -> tuple[LinearProbe, list[float]]:
    """Linear classifier of pooled vectors x (N, K, F), trained with cross-entropy."""
    mean, std = layer_stats(list(x))
    head = new_head(cfg, mean, std, num_classes, device)
    inputs, labels = torch.from_numpy(x).to(device), torch.tensor(y, device=device)
    losses = fit_head(cfg, head, len(y), lambda idx: nn.functional.cross_entropy(head(inputs[idx]), labels[idx]))
    return head, losses


def frame_stats(train: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Mean and std (K, D) over every training frame."""
    return layer_stats(train, frame_axis=1)


def mixed_weights(head: LinearProbe, mean: Tensor) -> list[float] | None:
    """The head's layer weights; None when it saw a single layer."""
    return head.mix.weights if mean.shape[0] > 1 else None
