"""Learning-rate schedules as pure functions of the update step, returning a multiplier of the peak rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ssl_audio.checks import fail, require_count, require_positive, require_probability, require_range

PHASE_SUM_TOLERANCE = 1e-9  # three decimal fractions (0.1 + 0.4 + 0.5) sum to 1 within a few ulps, far below this


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Defaults: wav2vec 2.0 / HuBERT BASE (fairseq polynomial_decay, power 1, 32k warmup of 400k)."""

    kind: Literal["polynomial", "linear", "tri_stage", "constant"] = "polynomial"
    warmup_updates: int = 32_000  # linear warmup from peak/warmup to peak
    power: float = 1.0  # polynomial decay exponent (1.0 = linear)
    end_lr_ratio: float = 0.0  # final learning rate as a fraction of the peak (polynomial, linear)
    # tri_stage (fairseq, used for fine-tuning): phase fractions of the total and the start/end scales
    phase_ratios: tuple[float, float, float] = (0.1, 0.4, 0.5)
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05

    def __post_init__(self) -> None:
        require_count(self, "warmup_updates", minimum=0)
        require_positive(self, "power")
        require_probability(self, "end_lr_ratio", "phase_ratios", "init_lr_scale")
        require_range(self, "final_lr_scale", low=0, high=1, low_open=True)  # decays through log(final_lr_scale)
        if abs(sum(self.phase_ratios) - 1.0) > PHASE_SUM_TOLERANCE:
            fail(self, "phase_ratios", f"must sum to 1 (warmup, hold, decay), got {list(self.phase_ratios)}")


def lr_multiplier(step: int, total_updates: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak learning rate for the update with index `step` (0-based)."""
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind == "tri_stage":
        return _tri_stage(step, total_updates, cfg)
    warmup = cfg.warmup_updates
    if step < warmup:  # the first update already moves: (step + 1) / warmup, never 0
        return (step + 1) / warmup
    remaining = max(total_updates - warmup, 1)
    progress = min((step - warmup) / remaining, 1.0)
    power = 1.0 if cfg.kind == "linear" else cfg.power
    return cfg.end_lr_ratio + (1.0 - cfg.end_lr_ratio) * (1.0 - progress) ** power


def _tri_stage(step: int, total_updates: int, cfg: ScheduleConfig) -> float:
    """Linear warmup from init_lr_scale to 1, hold at 1, exponential decay to final_lr_scale."""
    warmup, hold = (round(r * total_updates) for r in cfg.phase_ratios[:2])
    decay = max(total_updates - warmup - hold, 1)
    if step < warmup:
        return cfg.init_lr_scale + (1.0 - cfg.init_lr_scale) * step / max(warmup, 1)
    if step < warmup + hold:
        return 1.0
    progress = min((step - warmup - hold) / decay, 1.0)
    return math.exp(math.log(cfg.final_lr_scale) * progress)
