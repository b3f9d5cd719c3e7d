"""What training hands a family's forward besides the batch: the update, the random stream and the layerdrop seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class StepContext:
    step: int = 0  # optimizer updates so far (wav2vec 2.0's Gumbel temperature anneals with it)
    generator: torch.Generator | None = None  # masks, negatives and Gumbel noise; None: the global generator
    layerdrop_seed: int | None = None  # the same seed drops the same layers on every process; None: unseeded


EVAL = StepContext()  # step 0, global random stream, unseeded layerdrop (a no-op in eval mode)
