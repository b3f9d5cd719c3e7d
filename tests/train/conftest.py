"""Fixtures of the training-loop tests: a small synthetic corpus with its manifests, and HuBERT label files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from train_helpers import LABEL_RATE, chirp_with_noise

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.labels import write_labels
from ssl_audio.data.manifest import build_manifests, load_manifest

NUM_CLIPS = 30


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with audio/ (30 wavs of 1-3 s at 16 kHz) and manifest/ (train.tsv: 27 rows, valid.tsv: 3)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1234)
    audio = root / "audio"
    audio.mkdir()
    for i in range(NUM_CLIPS):
        seconds = round(float(rng.uniform(1.0, 3.0)), 3)
        sf.write(audio / f"clip_{i:02d}.wav", chirp_with_noise(rng, seconds), SAMPLE_RATE, subtype="PCM_16")
    summary = build_manifests([audio], root / "manifest", valid_fraction=0.1, seed=0)
    assert (summary["train_files"], summary["valid_files"]) == (27, 3)
    return root


@pytest.fixture(scope="session")
def labels(corpus: Path) -> Callable[[int], tuple[str, str]]:
    """labels(k) -> (train, valid) label files of random classes in [0, k) at 50 Hz (written once per k)."""
    made: dict[int, tuple[str, str]] = {}

    def make(k: int) -> tuple[str, str]:
        if k not in made:
            rng = np.random.default_rng(k)
            paths = []
            for split in ("train", "valid"):
                manifest = load_manifest(corpus / "manifest" / f"{split}.tsv")
                rows = [rng.integers(0, k, size=n * LABEL_RATE // SAMPLE_RATE) for n in manifest.num_samples]
                path = corpus / f"{split}_k{k}.km"
                write_labels(path, manifest, rows, k=k, rate=LABEL_RATE)
                paths.append(str(path))
            made[k] = (paths[0], paths[1])
        return made[k]

    return make
