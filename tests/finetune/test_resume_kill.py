"""Exact resume of fine-tuning across the unfreeze point: a run SIGKILLed after its update-2 checkpoint and
resumed (`ssl-audio finetune ... --resume auto`) ends bit-identical to a run never stopped. The encoder is frozen
for 3 updates, so the resumed leg runs frozen and unfrozen updates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from finetune_helpers import ft_overrides, write_corpus
from safetensors.torch import load_file

from ssl_audio.finetune.targets import write_split_manifests
from ssl_audio.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
UPDATES, FREEZE = 6, 3


def command(corpus: Path, run_dir: Path, recipe: Path, *extra: str) -> list[str]:
    overrides = ft_overrides(
        corpus, run_dir, f"train.max_updates={UPDATES}", f"model.config.freeze_updates={FREEZE}", "train.save_every=1",
        "train.keep_last=8", "train.valid_every=1000",
    )  # fmt: skip
    return [sys.executable, "-m", "ssl_audio.cli", "finetune", str(recipe), *overrides, *extra]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-6000:]
    return output


def final(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(sorted(run_dir.glob("step_*"))[-1] / "model.safetensors")


@pytest.mark.slow
def test_sigkill_and_resume_across_the_unfreeze_point(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 3\n")
    cfg = load_config(recipe, ft_overrides(corpus, tmp_path / "unused"))
    write_split_manifests(cfg.finetune, cfg.data.manifest_dir)  # both runs read the same manifests
    straight = start(command(corpus, tmp_path / "straight", recipe))
    killed_dir = tmp_path / "killed"
    killed = start(command(corpus, killed_dir, recipe))
    deadline = time.monotonic() + 300
    while not (killed_dir / "step_00000002").exists():
        assert killed.poll() is None, killed.communicate()[0][-6000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    finish(straight)
    resumed_from = max(int(p.name.split("_")[1]) for p in killed_dir.glob("step_*"))
    assert resumed_from < UPDATES, "the first leg finished before the kill"
    output = finish(start(command(corpus, killed_dir, recipe, "--resume", "auto")))
    assert "resumed from" in (killed_dir / "train.log").read_text(), output[-3000:]
    a, b = final(tmp_path / "straight"), final(killed_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    frozen_then = load_file(tmp_path / "straight" / f"step_{FREEZE:08d}" / "model.safetensors")
    first = load_file(tmp_path / "straight" / "step_00000001" / "model.safetensors")
    layer = "encoder.transformer.layers.0.attention.qkv.weight"
    assert torch.equal(first[layer], frozen_then[layer])  # frozen through update 3
    assert not torch.equal(frozen_then[layer], a[layer])  # trained after it
