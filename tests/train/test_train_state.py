"""TrainState: one object that writes the train_state.pt dict and reads it back into fresh parts."""

from __future__ import annotations

import random

import pytest
import torch

from ssl_audio.train.train_state import TrainState


class FakeLoader:
    """The two methods TrainState uses of a ResumableLoader."""

    def __init__(self, epoch: int = 0, position: int = 0) -> None:
        self.state = {"epoch": epoch, "position": position}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def parts(lr: float = 0.1) -> tuple[torch.nn.Linear, TrainState]:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    state = TrainState(
        model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, loader=FakeLoader(), rank=0, world_size=1
    )
    return model, state


def test_round_trip_restores_counters_optimizer_schedule_loader_and_rng() -> None:
    model, state = parts()
    for _ in range(3):
        model(torch.ones(1, 3)).sum().backward()
        state.optimizer.step()
        state.scheduler.step()
    state.step, state.skipped, state.loader.state = 3, 1, {"epoch": 2, "position": 5}
    torch.manual_seed(11)
    random.seed(11)
    saved = state.state_dict()
    expected_draws = (torch.rand(3), random.random())
    assert sorted(saved) == ["loader", "optimizer", "rng", "scaler", "scheduler", "skipped", "step", "world_size"]

    _, fresh = parts()
    torch.manual_seed(0)
    fresh.load_state_dict(saved, source="S", peak_lr=0.1, seed=0, fixed_audio=False)
    assert (fresh.step, fresh.skipped, fresh.epoch) == (3, 1, 2)
    assert fresh.loader.state == {"epoch": 2, "position": 5}
    assert fresh.scheduler.last_epoch == 3
    assert fresh.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 4, rel=1e-15)  # multiplier at step 3
    old, new = state.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert all(torch.equal(old[k]["exp_avg"], new[k]["exp_avg"]) for k in old)
    draws = (torch.rand(3), random.random())  # the RNG continues where the saved state left off
    assert torch.equal(draws[0], expected_draws[0]) and draws[1] == expected_draws[1]


def test_other_process_count_is_refused_naming_both() -> None:
    _, state = parts()
    saved = {**state.state_dict(), "world_size": 2}
    with pytest.raises(
        ValueError, match=r"^S: saved with 2 processes, resuming with 1: only a run with train\.target_"
    ):
        state.load_state_dict(saved, source="S", peak_lr=0.1, seed=0, fixed_audio=False)
