"""What a run tells you while it runs: tracker scalars (TensorBoard by default, trackers.py), a text log
(train.log, and the `ssl_audio.train` logger), a progress bar, and warnings when the quantiser collapses or
masked accuracy stays at chance. The unit of every scalar: scalars.py."""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ssl_audio.train.trackers import start_trackers

logger = logging.getLogger("ssl_audio.train")


class Telemetry:
    """Main-process logging; on other ranks every method is a no-op."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        total_updates: int,
        start_update: int,
        log_every: int,
        chance: float,
        chance_warn_after: int,
        perplexity_floor: float | None,
        log_with: Sequence[str] = ("tensorboard",),
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        """`log_with`: tracker names (train.log_with); `hparams`: flat scalars (trackers.hyperparameters)."""
        self.enabled, self.log_every = enabled, log_every
        self.chance, self.chance_warn_after, self.perplexity_floor = chance, chance_warn_after, perplexity_floor
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.warned: set[str] = set()
        self.trackers: list = []
        self.bar = self.log_file = None
        if enabled:
            self.trackers = start_trackers(log_with, run_dir, hparams or {})
            self.log_file = open(run_dir / "train.log", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            self.bar = tqdm(total=total_updates, initial=start_update, desc="updates", unit="upd", dynamic_ncols=True)

    def line(self, text: str) -> None:
        if self.enabled:
            logger.info(text)
            self.log_file.write(text + "\n")
            self.log_file.flush()

    def warn(self, key: str, text: str) -> None:
        """Warn once per kind of trouble."""
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(text, stacklevel=2)
            self.line(f"WARNING: {text}")

    def update(self, step: int, scalars: dict[str, float]) -> None:
        """Record one update (`step` = updates done); every `log_every` updates, flush averages."""
        if not self.enabled:
            return
        self.bar.update(1)
        for key, value in scalars.items():
            self.sums[key] += value
        self.count += 1
        if step % self.log_every:
            return
        means = {key: total / self.count for key, total in self.sums.items()}
        self.sums.clear()
        self.count = 0
        self.log({f"train/{key}": value for key, value in means.items()}, step)
        self.bar.set_postfix(loss=f"{means.get('loss', math.nan):.3f}", lr=f"{means.get('lr', 0):.2e}")
        shown = ("loss", "accuracy", "code_perplexity", "lr", "grad_norm", "audio_seconds_per_second")
        self.line(f"update {step}: " + " ".join(f"{k}={means[k]:.4g}" for k in shown if k in means))
        self.check(step, means)

    def check(self, step: int, means: dict[str, float]) -> None:
        perplexity = means.get("code_perplexity")
        if self.perplexity_floor is not None and perplexity is not None and perplexity < self.perplexity_floor:
            self.warn(
                "collapse",
                f"update {step}: code perplexity {perplexity:.2f} is below {self.perplexity_floor:.2f}: the codebook "
                "is collapsing (raise the diversity weight or the Gumbel temperature, or lower the learning rate)",
            )
        accuracy = means.get("accuracy")
        if accuracy is not None and step >= self.chance_warn_after and accuracy <= 1.5 * self.chance:
            self.warn(
                "chance",
                f"update {step}: masked accuracy {accuracy:.4f} is still near chance ({self.chance:.4f}): "
                "the model is not learning (check the labels, the learning rate and the masking)",
            )

    def validation(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.log({f"valid/{key}": value for key, value in scalars.items()}, step)
        self.line(f"valid at update {step}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items())))

    def log(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            for tracker in self.trackers:
                tracker.finish()
            self.log_file.close()
