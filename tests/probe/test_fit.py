"""The probe heads' training loop: Adam with cosine decay of the learning rate to zero.

Oracle: far from the optimum the gradient's sign and size barely change, so Adam's bias-corrected step is
the learning rate itself; each update must then equal lr * (1 + cos(pi * step / steps)) / 2.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_audio.probe.heads import fit


def test_updates_follow_a_cosine_decay_to_zero():
    # float64: each update is read back as a difference of two weights near 0.6; in fp32 that costs ulp(0.6) 6e-8,
    # 4e-5 of the smallest update (1.7e-3), against which rel 1e-4 had a margin of 3. In fp64 it is 1e-13.
    head = nn.Linear(1, 1, bias=False, dtype=torch.float64)
    nn.init.zeros_(head.weight)
    seen: list[float] = []

    def batch_loss(indices: torch.Tensor) -> torch.Tensor:
        seen.append(head.weight.detach().item())
        return (head.weight.sum() - 1e6) ** 2 * len(indices)  # the target is far away: the gradient is ~constant

    lr, items, batch, epochs = 0.1, 6, 2, 4  # 3 updates per epoch, 12 in all
    losses = fit(head, items, batch_loss, epochs=epochs, batch_size=batch, lr=lr, seed=0)
    seen.append(head.weight.detach().item())
    steps = epochs * items // batch
    updates = [after - before for before, after in zip(seen, seen[1:])]
    expected = [lr * 0.5 * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]
    assert len(updates) == steps and len(losses) == epochs
    # Adam's step is lr * m_hat / (sqrt(v_hat) + eps): the gradient -4e6 drifts by w / 1e6 < 1e-6 relative over the
    # run, so m_hat / sqrt(v_hat) = 1 within 1e-6, and eps / |g| = 3e-15. One step of the schedule off is ~2 % or more.
    assert updates == pytest.approx(expected, rel=1e-5)
    assert not head.training
