"""A disk that fills up mid-save: a one-line error naming the file, the last checkpoint kept, and `--resume auto`
clears what a killed save left before it writes anything, then resumes from that checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import FullDisk, config, step_folders, wav2vec2_overrides

import ssl_audio.train.checkpoint as ckpt
import ssl_audio.train.loop as loop
from ssl_audio import cli
from ssl_audio.train.checkpoint import find_resume


@pytest.mark.slow
def test_full_disk_at_a_save_then_resume(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    overrides = wav2vec2_overrides(corpus, run_dir, "train.max_updates=4", "train.save_every=2")
    real_save = loop.save_checkpoint

    def save_on_a_filling_disk(run, step, **kwargs):  # 1000 bytes left when update 4 saves
        if step == 4:
            monkeypatch.setattr(ckpt, "open", FullDisk(1000), raising=False)
        return real_save(run, step, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", save_on_a_filling_disk)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    capsys.readouterr()
    assert cli.main(["pretrain", str(recipe), *overrides]) == 2
    partial = run_dir / ".step_00000004.tmp"
    err = capsys.readouterr().err  # the progress bar's lines, then the error
    assert err.endswith(
        f"\nssl-audio pretrain: error: cannot save step 4: no space left on device at {partial / 'model.safetensors'}\n"
    )
    assert "Traceback" not in err
    monkeypatch.undo()
    assert [p.name for p in step_folders(run_dir)] == ["step_00000002"] and not partial.exists()
    assert find_resume(run_dir).step == 2

    # What a save killed by the full disk leaves behind (a process killed mid-save, or an older version).
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 4096)
    (run_dir / "config.yaml.tmp").write_text("optim:\n  lr: 0.0")
    stale_when_config_written = []
    real_save_config = loop.save_config

    def save_config(cfg, path):
        stale_when_config_written.append(sorted(p.name for p in run_dir.glob("*.tmp")))
        return real_save_config(cfg, path)

    monkeypatch.setattr(loop, "save_config", save_config)
    result = loop.train(config(overrides), resume="auto")
    assert (result.step, len(result.losses)) == (4, 2)  # resumed from update 2
    assert stale_when_config_written == [[]]  # cleared before the first write
    assert [p.name for p in step_folders(run_dir)] == ["step_00000002", "step_00000004"]
    log = (run_dir / "train.log").read_text()
    assert f"removed {partial}: left by a save that did not finish" in log
    assert f"removed {run_dir / 'config.yaml.tmp'}: left by a save that did not finish" in log
    assert f"resumed from {run_dir / 'step_00000002'} at update 2" in log
