"""What every pretraining family returns from forward."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class Output:
    """Loss terms and metrics of one batch.

    `loss` is a sum over `sample_size` predicted frames (fairseq's convention), so that gradient
    accumulation and many processes can normalise by the total number of frames they predicted.
    """

    loss: Tensor  # scalar fp32, with graph: the sum of `losses`
    sample_size: Tensor  # scalar long: frames the loss sums over
    losses: dict[str, Tensor]  # each weighted term, detached, scalar fp32
    metrics: dict[str, Tensor]  # detached scalars: accuracies, perplexities, temperature, counts

    @property
    def mean_loss(self) -> Tensor:
        return self.loss / self.sample_size.clamp(min=1)
