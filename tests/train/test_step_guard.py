"""An optimizer step that makes the weights non-finite from a finite gradient (a rate or eps out of range) stops
the run at that update with a TrainingError naming it and the optim keys; those weights are never saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import config, step_folders, wav2vec2_overrides

from ssl_audio.train.loop import TrainingError, train


class PoisonedAdamW(torch.optim.AdamW):
    """AdamW whose 3rd step writes one Inf into the first weight: a step gone wrong, whatever config checks."""

    calls = 0
    after: list[list[torch.Tensor]] = []  # the weights after each step

    def step(self, closure=None):  # noqa: ANN001, ANN201
        out = super().step(closure)
        PoisonedAdamW.calls += 1
        first = self.param_groups[0]["params"][0]
        if PoisonedAdamW.calls == 3:
            with torch.no_grad():
                first.view(-1)[5] = float("inf")
        PoisonedAdamW.after.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out


def assert_finite(folder: Path) -> dict[str, torch.Tensor]:
    weights = load_file(folder / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), folder
    return weights


def test_a_step_to_non_finite_weights_stops_at_that_update_without_saving_them(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.optim, "AdamW", PoisonedAdamW)
    PoisonedAdamW.calls, PoisonedAdamW.after = 0, []
    cfg = config(wav2vec2_overrides(corpus, tmp_path, "train.max_updates=6", "train.save_every=1"))
    with pytest.raises(TrainingError) as err:
        train(cfg)
    message = str(err.value)
    assert message.startswith("stopping at update 3: the optimizer step made the weights non-finite (max |w| inf)")
    assert "optim.lr=0.001, optim.eps=1e-06, optim.betas=[0.9, 0.98], optim.weight_decay=0.01" in message
    assert message.endswith(f"Not saved: the newest checkpoint in {tmp_path} holds the last finite weights")
    assert PoisonedAdamW.calls == 3  # caught at the update itself, not updates later
    assert [p.name for p in step_folders(tmp_path)] == ["step_00000001", "step_00000002"]
    newest = assert_finite(step_folders(tmp_path)[-1])
    # The newest checkpoint holds exactly the weights after the 2nd step, every parameter bit for bit.
    saved = sorted(v.numpy().tobytes() for v in newest.values())
    assert all(p.numpy().tobytes() in saved for p in PoisonedAdamW.after[1])
    assert not all(p.numpy().tobytes() in saved for p in PoisonedAdamW.after[0])  # (the check can fail)
    assert message in (tmp_path / "train.log").read_text()
    assert not list(tmp_path.glob(".step_*"))


def test_a_positive_eps_that_is_zero_in_float32_is_caught_at_the_first_update(corpus: Path, tmp_path: Path) -> None:
    """optim.eps=1e-50 is positive, but 0 in float32: a parameter without gradient then steps by 0/0."""
    cfg = config(wav2vec2_overrides(corpus, tmp_path, "train.max_updates=4", "train.save_every=1", "optim.eps=1e-50"))
    with pytest.raises(
        TrainingError, match=r"^stopping at update 1: the optimizer step made the weights non-finite"
    ) as err:
        train(cfg)
    assert "(max |w| nan)" in str(err.value) and "optim.eps=1e-50" in str(err.value)
    assert step_folders(tmp_path) == []
