"""`ssl-audio --version`, `pretrain --print-config`, and options after KEY=VALUE overrides, through real processes."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ssl_audio.configs import to_dict
from ssl_audio.data.manifest import build_manifests
from ssl_audio.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "tiny_wav2vec2.yaml"


def ssl_audio(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_version_is_the_package_version(tmp_path: Path) -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    done = ssl_audio("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ssl-audio {setup['metadata']['version']}\n" == "ssl-audio 0.1.0\n"


@pytest.mark.slow  # the subprocess imports torch and accelerate: ~5-10 s
def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # options before, between and after the overrides
    args = ["--resume", "auto", f"run_dir={run_dir}", "--print-config", "optim.lr=1e-4", "train.max_updates=7"]
    done = ssl_audio("pretrain", str(TINY_RECIPE), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["optim"]["lr"] == 1e-4 and printed["train"]["max_updates"] == 7
    assert printed["run_dir"] == str(run_dir) and printed["model"]["family"] == "wav2vec2"
    assert printed["optim"]["clip_norm"] == 5.0  # from the recipe
    overrides = [f"run_dir={run_dir}", "optim.lr=1e-4", "train.max_updates=7"]
    assert printed == to_dict(load_config(TINY_RECIPE, overrides))
    assert list(tmp_path.iterdir()) == []  # no run folder, no config.yaml, no logs


@pytest.mark.slow
def test_print_config_fails_on_a_bad_model_config_key_like_training_would(tmp_path: Path) -> None:
    done = ssl_audio("pretrain", str(TINY_RECIPE), "--print-config", "model.config.bogus=1", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("ssl-audio pretrain: error: unknown config key 'model.config.bogus'")
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_missing_recipe_names_only_the_recipe(tmp_path: Path) -> None:
    done = ssl_audio("pretrain", "--resume", "auto", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "ssl-audio pretrain: error: the following arguments are required: recipe"


def test_unknown_options_are_still_refused(tmp_path: Path) -> None:
    done = ssl_audio("hubert-iterate", "recipe.yaml", "a=1", "--bogus", "b=2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("ssl-audio: error: unrecognized arguments: --bogus")


@pytest.mark.slow  # torch and accelerate imports, then one batch
def test_data_pass_takes_overrides_after_its_options(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(16_000) / 16_000
    for i in range(4):
        sf.write(audio / f"tone_{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), 16_000)
    build_manifests([audio], tmp_path / "manifest", valid_fraction=0.0, seed=0)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"run_dir": str(tmp_path / "run"), "data": {"manifest_dir": str(tmp_path / "manifest"), "num_workers": 0}}
        )
    )
    done = ssl_audio(
        "data-pass", str(recipe), "data.max_samples=8000", "--max-batches", "1", "seed=5", "data.collate=crop",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("data pass: ")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["seed"], saved["data"]["max_samples"], saved["data"]["collate"]) == (5, 8000, "crop")
    assert "padding_fraction" in json.loads((tmp_path / "run" / "data_pass.json").read_text())
