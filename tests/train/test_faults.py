"""Non-finite updates: skipped without touching weights or optimizer, counted, logged; too many in a row stop
the run with a TrainingError naming the update; no checkpoint ever holds NaN."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import config, step_folders, wav2vec2_overrides

import ssl_audio.train.loop as loop
from ssl_audio.train.checkpoint import load_checkpoint
from ssl_audio.train.loop import TrainingError, train


@dataclasses.dataclass
class Snapshot:
    step: int  # the `step` the loop passed to forward
    params: dict[str, torch.Tensor]
    optimizer: dict
    lr: list[float]


class Poisoner:
    """Wraps the loop's forward_batch: snapshots weights and optimizer before each training micro-batch, and
    multiplies the loss by `bad` (NaN or Inf) where `poison(call, step)` says so."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, poison: Callable[[int, int], bool], bad: float) -> None:
        self.snapshots: list[Snapshot] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        real_forward, optimizers = loop.forward_batch, self.optimizers

        class RecordingAdamW(torch.optim.AdamW):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                optimizers.append(self)

        def forward_batch(model, family, batch, *, step, **kwargs):
            if not model.training:  # validation
                return real_forward(model, family, batch, step=step, **kwargs)
            call = len(self.snapshots)
            opt = self.optimizers[-1]
            self.snapshots.append(
                Snapshot(
                    step=step,
                    params={k: v.detach().clone() for k, v in model.state_dict().items()},
                    optimizer=copy.deepcopy(opt.state_dict()["state"]),
                    lr=[group["lr"] for group in opt.param_groups],
                )
            )
            out = real_forward(model, family, batch, step=step, **kwargs)
            return dataclasses.replace(out, loss=out.loss * bad) if poison(call, step) else out

        monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
        monkeypatch.setattr(loop, "forward_batch", forward_batch)


def same_state(a: Snapshot, b: Snapshot) -> bool:
    params = all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    moments = a.optimizer.keys() == b.optimizer.keys() and all(
        torch.equal(a.optimizer[i][name], b.optimizer[i][name]) for i in a.optimizer for name in a.optimizer[i]
    )
    return params and moments and a.lr == b.lr


def assert_finite_checkpoints(run_dir: Path) -> list[Path]:
    folders = step_folders(run_dir)
    for folder in folders:
        weights = load_file(folder / "model.safetensors")
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), folder
    return folders


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_update_is_skipped_and_leaves_no_trace(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: float
) -> None:
    poisoned = {2, 4}  # the 3rd and 5th micro-batches: not in a row, so max_bad_updates=2 is never reached
    spy = Poisoner(monkeypatch, lambda call, step: call in poisoned, bad)
    cfg = config(
        wav2vec2_overrides(corpus, tmp_path, "train.max_updates=4", "train.max_bad_updates=2", "train.save_every=2")
    )
    result = train(cfg)

    assert (result.step, result.skipped, len(result.losses)) == (4, 2, 4)  # 4 real updates, 2 skipped
    assert all(math.isfinite(loss) for loss in result.losses)
    shots = spy.snapshots
    assert [s.step for s in shots] == [0, 1, 2, 2, 3, 3]  # a skipped update does not advance the step
    for call in sorted(poisoned):
        before, after = shots[call], shots[call + 1]
        assert same_state(before, after), f"the skipped update {call} changed weights, moments or lr"
        assert not same_state(shots[call - 1], before)  # while a good update changes them
    assert shots[2].optimizer[0]["step"] == 2  # Adam's own count ignored the skipped updates
    log = (tmp_path / "train.log").read_text()
    assert "update 3: non-finite loss or gradient, skipped (1 in a row)" in log
    assert "update 4: non-finite loss or gradient, skipped (1 in a row)" in log
    assert [p.name for p in assert_finite_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]
    assert load_checkpoint(tmp_path / "step_00000004").train_state["skipped"] == 2


def test_too_many_bad_updates_in_a_row_stop_the_run(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Poisoner(monkeypatch, lambda call, step: step >= 2, math.nan)  # update 3 can never succeed
    cfg = config(
        wav2vec2_overrides(corpus, tmp_path, "train.max_updates=6", "train.max_bad_updates=3", "train.save_every=1")
    )
    with pytest.raises(TrainingError, match=r"stopping at update 3: 3 non-finite updates in a row") as err:
        train(cfg)
    assert str(tmp_path) in str(err.value)  # tells where the last finite weights are
    assert [s.step for s in spy.snapshots] == [0, 1, 2, 2, 2]
    assert all(same_state(spy.snapshots[2], s) for s in spy.snapshots[3:])
    log = (tmp_path / "train.log").read_text()
    for n in (1, 2, 3):
        assert f"update 3: non-finite loss or gradient, skipped ({n} in a row)" in log
    assert [p.name for p in assert_finite_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    assert not list(tmp_path.glob(".step_*"))
