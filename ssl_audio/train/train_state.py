"""The train state: everything besides the weights that a resumed run needs, as one object (lingua's TrainState).

It holds the stateful parts (optimizer, scheduler, loss scaler, this process's loader) and the counters, and turns
them into the plain dict a step folder's train_state.pt stores (loadable with weights_only=True) and back. The
per-process parts (RNG, loader position) are gathered from every rank, and under FSDP so is the optimizer's state,
so `state_dict()` is a collective: call it on every process.

A run saved on W processes resumes on another number only when its audio per update is fixed
(train.target_seconds_per_update, which sets the accumulation from the world size): the loader finishes the epoch
with what the old ranks had left (data/sampler.py), and every rank reseeds its RNG from (seed, update, rank), as no
saved stream belongs to it. Otherwise the update would change size silently: refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object

from ssl_audio.data.loader import ResumableLoader
from ssl_audio.train.optimizer import place_step_counters
from ssl_audio.train.resume_changes import apply_optimizer_settings
from ssl_audio.train.rng import capture_rng, restore_rng, seed_everything
from ssl_audio.train.state_dicts import load_optimizer_state, optimizer_state


def check_world_size(state: dict[str, Any], world_size: int, *, source: str, fixed_audio: bool) -> None:
    """Refuse another number of processes unless the audio per update is fixed (train.target_seconds_per_update)."""
    saved = state["world_size"]
    if saved != world_size and not fixed_audio:
        raise ValueError(
            f"{source}: saved with {saved} processes, resuming with {world_size}: only a run with "
            "train.target_seconds_per_update (a fixed audio per update) resumes on another number of processes"
        )


@dataclass(kw_only=True)
class TrainState:
    model: torch.nn.Module  # as prepared (DDP, FSDP, compiled): the optimizer's state is keyed through it
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
            "optimizer": optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "loader": loaders,
            "step": self.step,
            "skipped": self.skipped,
            "world_size": self.world_size,
        }

    def load_state_dict(
        self, state: dict[str, Any], *, source: str, peak_lr: float, seed: int, fixed_audio: bool
    ) -> None:
        """Continue from `state`; the optimizer keeps this run's hyperparameters and `peak_lr` (resume_changes).

        fixed_audio: train.target_seconds_per_update is set, so another number of processes may resume."""
        check_world_size(state, self.world_size, source=source, fixed_audio=fixed_audio)
        fresh_groups = [dict(group) for group in self.optimizer.param_groups]
        load_optimizer_state(self.model, self.optimizer, state["optimizer"], source=source)
        self.scheduler.load_state_dict(state["scheduler"])
        apply_optimizer_settings(self.optimizer, self.scheduler, fresh_groups, peak_lr)
        place_step_counters(self.optimizer)  # a run saved unfused, resumed fused
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.skipped = state["step"], state["skipped"]
        if state["world_size"] == self.world_size:
            self.loader.load_state_dict(state["loader"][self.rank])
            restore_rng(state["rng"][self.rank])
        else:
            try:
                self.loader.load_state_dicts_of_world(state["loader"])
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
            seed_everything(((seed * 1000 + self.rank + 1) * 1_000_003 + self.step) % 2**63)
        self.epoch = self.loader.state_dict()["epoch"]
