"""Gumbel-softmax vector quantizer of wav2vec 2.0: each frame picks one codevector per group.

Shapes: B batch, T frames, D input channels, G groups, V entries per group, E = Dcode / G channels per entry.

Training picks entries with a hard Gumbel-softmax (straight-through: the forward pass is one-hot, the
gradient is that of the soft sample); eval picks the argmax. The quantized frame is the concatenation of
the G chosen codevectors, (B, T, Dcode); the caller projects it (wav2vec 2.0's project_q).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from ssl_audio.checks import fail, require_count, require_positive, require_range


@dataclass(frozen=True, kw_only=True)
class QuantizerConfig:
    """Codebook size and Gumbel temperature schedule."""

    num_groups: int = 2  # G; wav2vec 2.0 BASE and LARGE latent_groups: 2
    num_entries: int = 320  # V per group; wav2vec 2.0 latent_vars: 320 (320^2 = 102.4k combinations)
    code_dim: int = 256  # Dcode over all groups (128 per group); wav2vec 2.0 BASE final_dim 256, LARGE 768
    temp_start: float = 2.0  # Gumbel temperature at step 0; wav2vec 2.0 BASE and LARGE: 2.0
    temp_decay: float = 0.999995  # multiplied in once per update; wav2vec 2.0 BASE and LARGE: 0.999995
    temp_end: float = 0.5  # floor of the schedule; wav2vec 2.0 BASE 0.5, LARGE 0.1

    def __post_init__(self) -> None:
        require_count(self, "num_groups", "num_entries", "code_dim")
        if self.code_dim % self.num_groups:
            reason = f"code_dim {self.code_dim} must be a positive multiple of num_groups {self.num_groups}"
            fail(self, "code_dim", reason)
        require_positive(self, "temp_start", "temp_end")
        require_range(self, "temp_decay", low=0, high=1, low_open=True)


def gumbel_temperature(step: int, start: float = 2.0, decay: float = 0.999995, end: float = 0.5) -> float:
    """max(start * decay**step, end): wav2vec 2.0's schedule, stepped once per optimizer update."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return max(start * decay**step, end)


def diversity_loss(prob_perplexity: Tensor | float, num_groups: int, num_entries: int) -> Tensor | float:
    """(G*V - prob perplexity) / (G*V): 0 when the mean code distribution is uniform, (GV - G)/GV when collapsed."""
    num_codes = num_groups * num_entries
    return (num_codes - prob_perplexity) / num_codes


@dataclass(frozen=True, kw_only=True)
class QuantizerOutput:
    quantized: Tensor  # (B, T, Dcode) the chosen codevectors, groups concatenated
    code_perplexity: Tensor  # () sum over groups of exp(entropy) of the argmax code histogram (a metric)
    prob_perplexity: Tensor  # () sum over groups of exp(entropy) of the mean softmax (diversity loss input)
    temperature: float  # Gumbel temperature used for this call
    codes: Tensor  # (B, T, G) long: the entry each group used in `quantized` (Gumbel-sampled when training)


def _perplexity(probs: Tensor, valid: Tensor) -> Tensor:
    """probs (B, T, G, V), valid (B, T) bool -> () sum over groups of exp(entropy of the mean over valid frames).

    fairseq adds 1e-7 inside the log; xlogy (0 log 0 = 0) is exact, so a uniform mean gives exactly V per group.
    """
    probs = probs.masked_fill(~valid[:, :, None, None], 0.0)  # padded frames count for nothing, even if NaN
    mean = probs.sum(dim=(0, 1)) / valid.sum().clamp(min=1)  # (G, V)
    # log of a floor instead of 0: the same value (0 * log = 0), but a finite gradient where a mean underflows
    entropy = -torch.special.xlogy(mean, mean.clamp(min=torch.finfo(mean.dtype).tiny)).sum(dim=-1)  # (G,)
    return entropy.exp().sum()


def _hard_gumbel_softmax(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One-hot sample of softmax((logits + Gumbel noise) / temperature) over the last axis, straight-through."""
    gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()  # -log(Exp(1)) ~ Gumbel(0, 1)
    soft = ((logits + gumbel) / temperature).softmax(dim=-1)
    hard = nn.functional.one_hot(soft.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    # hard + (soft - soft) is exactly `hard` forward (hard - soft + soft may be off by an ulp); gradient of soft
    return hard + (soft - soft.detach())


class GumbelVectorQuantizer(nn.Module):
    """Frames (B, T, D) -> codevectors (B, T, Dcode), with the perplexities that wav2vec 2.0 logs and penalises."""

    def __init__(self, input_dim: int, config: QuantizerConfig) -> None:
        super().__init__()
        self.config = config
        groups, entries = config.num_groups, config.num_entries
        self.logits = nn.Linear(input_dim, groups * entries)  # fairseq weight_proj
        nn.init.normal_(self.logits.weight, mean=0.0, std=1.0)  # fairseq's init: logits of order sqrt(D)
        nn.init.zeros_(self.logits.bias)
        # fairseq's layout (1, G*V, E), so its checkpoints load as they are
        self.codevectors = nn.Parameter(torch.empty(1, groups * entries, config.code_dim // groups).uniform_())
        self.temperature = config.temp_start

    def set_step(self, step: int) -> None:
        """Move the Gumbel temperature to its value after `step` optimizer updates."""
        cfg = self.config
        self.temperature = gumbel_temperature(step, cfg.temp_start, cfg.temp_decay, cfg.temp_end)

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, generator: torch.Generator | None = None
    ) -> QuantizerOutput:
        """x (B, T, D); padding_mask (B, T) True at padded frames, which the perplexities ignore."""
        if x.ndim != 3 or x.shape[-1] != self.logits.in_features:
            raise ValueError(f"x must be (B, T, {self.logits.in_features}), got shape {tuple(x.shape)}")
        if padding_mask is not None and (padding_mask.dtype != torch.bool or padding_mask.shape != x.shape[:2]):
            raise ValueError(
                f"padding_mask must be bool of shape {tuple(x.shape[:2])}, "
                f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
            )
        groups, entries = self.config.num_groups, self.config.num_entries
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if padding_mask is None else ~padding_mask

        # fp32: softmax, Gumbel noise and entropies are unreliable in bf16/fp16
        logits = rearrange(self.logits(x).float(), "b t (g v) -> b t g v", g=groups)  # (B, T, G, V)
        best = logits.argmax(dim=-1)  # (B, T, G)
        with torch.no_grad():
            code_perplexity = _perplexity(nn.functional.one_hot(best, entries).float(), valid)
        prob_perplexity = _perplexity(logits.softmax(dim=-1), valid)

        if self.training:
            onehot = _hard_gumbel_softmax(logits, self.temperature, generator)  # (B, T, G, V)
            codes = onehot.detach().argmax(dim=-1)
        else:
            onehot, codes = nn.functional.one_hot(best, entries).float(), best
        codebook = rearrange(self.codevectors, "1 (g v) e -> g v e", g=groups)  # (G, V, E)
        quantized = einsum(onehot.to(codebook.dtype), codebook, "b t g v, g v e -> b t g e")
        quantized = rearrange(quantized, "b t g e -> b t (g e)")  # (B, T, Dcode)
        return QuantizerOutput(
            quantized=quantized,
            code_perplexity=code_perplexity,
            prob_perplexity=prob_perplexity,
            temperature=self.temperature,
            codes=codes,
        )
