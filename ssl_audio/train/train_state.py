"""The train state: everything besides the weights that a resumed run needs, as one object (lingua's TrainState).

It holds the stateful parts (optimizer, scheduler, loss scaler, this process's loader) and the counters, and turns
them into the plain dict a step folder's train_state.pt stores (loadable with weights_only=True) and back. The
per-process parts (RNG, loader position) are gathered from every rank, so `state_dict()` is a collective: call it
on every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object

from ssl_audio.data.loader import ResumableLoader
from ssl_audio.train.resume_changes import apply_optimizer_settings
from ssl_audio.train.rng import capture_rng, restore_rng


@dataclass(kw_only=True)
class TrainState:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any | None  # accelerate's GradScaler under fp16, else None
    loader: ResumableLoader  # this process's
    rank: int
    world_size: int
    step: int = 0  # optimizer updates done
    epoch: int = 0  # the epoch the loader is in
    skipped: int = 0  # updates skipped as non-finite

    def state_dict(self) -> dict[str, Any]:
        """The train_state.pt dict: RNG and loader states of every rank (a collective), the rest from this one."""
        rng = gather_object([capture_rng()])
        loaders = gather_object([self.loader.state_dict()])
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "loader": loaders,
            "step": self.step,
            "skipped": self.skipped,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str, peak_lr: float) -> None:
        """Continue from `state`; the optimizer keeps this run's hyperparameters and `peak_lr` (resume_changes)."""
        if state["world_size"] != self.world_size:
            raise ValueError(f"{source}: saved with {state['world_size']} processes, resuming with {self.world_size}")
        fresh_groups = [dict(group) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        apply_optimizer_settings(self.optimizer, self.scheduler, fresh_groups, peak_lr)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"][self.rank])
        self.step, self.skipped = state["step"], state["skipped"]
        self.epoch = state["loader"][self.rank]["epoch"]
        restore_rng(state["rng"][self.rank])
