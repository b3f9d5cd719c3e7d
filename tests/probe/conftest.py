"""A small noise corpus for the noise protocols: two "keywords" (tones) said by two "speakers" (harmonic tilts),
clean, and its condition tables (ssl_audio.demo.snr_tables) at 0, 5, 10 and 20 dB: training seed 2, test seed 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.demo.snr_tables import make_condition_table

PEAK = 0.05  # low enough that no noisy copy reaches full scale (so none is rescaled)


def _clip(rng: np.random.Generator, pitch: float, tilt: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(tilt**h * np.sin(2 * np.pi * pitch * (h + 1) * t + rng.uniform(0, 6.3)) for h in range(4))
    pause = np.zeros(round(0.15 * SAMPLE_RATE))  # pauses, as speech has: where added noise shows most
    wave = np.concatenate([pause, wave / np.abs(wave).max(), pause])
    floor = 0.01 * rng.standard_normal(wave.size)  # a recording's own noise floor (~40 dB down): no constant MFCC
    return PEAK * (wave + floor)


@pytest.fixture(scope="session")
def noise_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clean/{train,test}.tsv (path speaker keyword) and snr/{train,test}_snr.tsv (path snr_db speaker keyword)."""
    root = tmp_path_factory.mktemp("noise_corpus")
    (root / "clean" / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        rows = ["path\tspeaker\tkeyword"]
        for keyword, pitch in (("low", 150.0), ("high", 1500.0)):
            for i in range(count):
                speaker, tilt = ("a", 0.3) if i % 2 == 0 else ("b", 0.9)
                wave = _clip(rng, pitch * rng.uniform(0.98, 1.02), tilt, rng.uniform(0.3, 0.4))
                name = f"audio/{split}_{keyword}_{i}.wav"
                sf.write(root / "clean" / name, wave.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
                rows.append(f"{name}\t{speaker}\t{keyword}")
        (root / "clean" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    make_condition_table(root / "clean" / "train.tsv", root / "snr", seed=2)
    make_condition_table(root / "clean" / "test.tsv", root / "snr", seed=1)
    return root
