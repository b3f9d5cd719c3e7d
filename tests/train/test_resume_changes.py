"""Resuming with a changed config: honoured keys are applied (and logged), every other change is refused naming
the key and both values; config.yaml records only values the run used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import child_env, config, step_folders, wav2vec2_overrides

from ssl_audio.configs import to_dict
from ssl_audio.train.checkpoint import load_checkpoint
from ssl_audio.train.loop import train
from ssl_audio.train.resume_changes import ResumeConfigError, check_resume_changes


def saved_text(overrides: list[str]) -> str:
    return yaml.safe_dump(to_dict(config(overrides)), sort_keys=False)


def test_honoured_changes_are_listed_and_others_refused_with_both_values(tmp_path: Path) -> None:
    base = wav2vec2_overrides(tmp_path, tmp_path / "run", "train.max_updates=4")
    text = saved_text(base)
    lines = check_resume_changes(
        text, config([*base, "optim.lr=0.01", "train.stop_at=3", "data.num_workers=2", "data.manifest_dir=/m"]),
        source="S",
    )  # fmt: skip
    assert lines == [
        f"resume: data.manifest_dir changed {str(tmp_path / 'manifest')!r} -> '/m' (applied)",
        "resume: data.num_workers changed 0 -> 2 (applied)",
        "resume: optim.lr changed 0.001 -> 0.01 (applied)",
        "resume: train.stop_at changed None -> 3 (applied)",
    ]
    assert check_resume_changes(text, config(base), source="S") == []
    with pytest.raises(ResumeConfigError) as err:
        check_resume_changes(
            text, config([*base, "seed=4", "model.config.encoder.dropout=0.1", "optim.lr=1"]), source="S"
        )
    message = str(err.value)
    assert message.startswith(
        "cannot resume S with a changed config (seed: 3 -> 4; model.config.encoder.dropout: 0.0 -> 0.1): "
    )
    assert "\n" not in message and "optim.*" in message and "optim.lr: " not in message


class RecordingAdamW(torch.optim.AdamW):
    """Records, at every step, the hyperparameters AdamW reads from each parameter group."""

    steps: list[list[tuple[float, float, float, tuple[float, float]]]] = []

    def step(self, closure=None):  # noqa: ANN001, ANN201
        RecordingAdamW.steps.append(
            [(g["lr"], g["eps"], g["weight_decay"], tuple(g["betas"])) for g in self.param_groups]
        )
        return super().step(closure)


@pytest.mark.slow
def test_changed_optimizer_settings_are_what_the_next_updates_use(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    RecordingAdamW.steps = []
    base = wav2vec2_overrides(corpus, tmp_path, "train.max_updates=4")  # warmup 2 of 4 updates, peak 0.001
    train(config([*base, "train.stop_at=2"]))
    changed = ["optim.lr=0.01", "optim.eps=1e-7", "optim.weight_decay=0.05", "optim.betas=[0.8,0.9]"]
    result = train(config([*base, *changed]), resume="auto")
    assert result.step == 4
    # lr_multiplier: warmup (s+1)/2 for s < 2, then linear decay 1 - (s-2)/2: 0.5, 1, 1, 0.5 of the peak.
    assert [groups[0][0] for groups in RecordingAdamW.steps] == [0.0005, 0.001, 0.01, 0.005]
    assert RecordingAdamW.steps[2] == [(0.01, 1e-7, 0.05, (0.8, 0.9)), (0.01, 1e-7, 0.0, (0.8, 0.9))]
    assert RecordingAdamW.steps[1] == [(0.001, 1e-6, 0.01, (0.9, 0.98)), (0.001, 1e-6, 0.0, (0.9, 0.98))]
    log = (tmp_path / "train.log").read_text()
    assert "resume: optim.lr changed 0.001 -> 0.01 (applied)" in log
    assert "resume: optim.betas changed [0.9, 0.98] -> [0.8, 0.9] (applied)" in log
    for saved in (tmp_path / "config.yaml", step_folders(tmp_path)[-1] / "config.yaml"):
        optim = yaml.safe_load(saved.read_text())["optim"]
        assert (optim["lr"], optim["eps"], optim["weight_decay"], optim["betas"]) == (0.01, 1e-7, 0.05, [0.8, 0.9])
    state = load_checkpoint(step_folders(tmp_path)[-1]).train_state
    assert state["scheduler"]["base_lrs"] == [0.01, 0.01]


@pytest.mark.slow
def test_refused_change_names_the_key_and_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = wav2vec2_overrides(corpus, run_dir, "train.max_updates=2")
    train(config(base))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    done = subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", "pretrain", str(recipe), *base, "data.max_samples=16000"]
        + ["train.max_updates=3", "--resume", "auto"],
        env=child_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        f"ssl-audio pretrain: error: cannot resume {run_dir / 'step_00000002'} with a changed config "
        "(data.max_samples: 20000 -> 16000): a resumed run honours only changes of run_dir, optim.*, schedule.*, "
    )
    assert done.stderr.count("\n") == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert [p.name for p in step_folders(run_dir)] == ["step_00000002"]
