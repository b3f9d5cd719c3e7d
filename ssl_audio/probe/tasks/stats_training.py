"""Training and applying the statistics-pooling head (ssl_audio.probe.stats_head) on frames of K layers: what
classify, verify and noisy run with `head: stats`.

Shapes: N items, B batch, T frames, K layers, D feature dimension, C classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.heads import pad_frames
from ssl_audio.probe.stats_head import StatsPoolHead
from ssl_audio.probe.tasks.training import EVAL_BATCH, fit_head, frame_stats


def stats_classifier(
    cfg: ProbeConfig, train: list[np.ndarray], y: list[int], num_classes: int, device: torch.device
) -> tuple[StatsPoolHead, list[float]]:
    """A StatsPoolHead initialised from `cfg.seed`, trained with cross-entropy on (K, T, D) items."""
    mean, std = frame_stats(train)
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(cfg.seed)
        head = StatsPoolHead(mean, std, num_classes).to(device)
    labels = torch.tensor(y, device=device)

    def batch_loss(idx: Tensor) -> Tensor:
        x, lengths = pad_frames([train[i] for i in idx], device)  # (B, T, K, D), (B,)
        return nn.functional.cross_entropy(head(x, lengths), labels[idx.to(device)])

    return head, fit_head(cfg, head, len(y), batch_loss)


def apply_batched(fn: Callable[[Tensor, Tensor], Tensor], items: list[np.ndarray], device: torch.device) -> np.ndarray:
    """fn(frames (B, T, K, D), lengths (B,)) -> (B, F) over every item, EVAL_BATCH at a time, without gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, len(items), EVAL_BATCH):
            x, lengths = pad_frames(items[start : start + EVAL_BATCH], device)
            out.append(fn(x, lengths).cpu().numpy())
    return np.concatenate(out)
