"""Helpers of the fine-tuning tests: a tiny corpus of chirps with made-up transcripts and keywords.

train.tsv / valid.tsv are probe tables (`path transcript keyword`, paths relative to the tables); the manifests
are written from them by `write_split_manifests`, as `ssl-audio finetune` does. Row 0 of train.tsv has a
transcript far longer than its audio's frames (the too-long skip).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_helpers import chirp_with_noise  # noqa: E402

WORDS = ("AB", "BAC", "CAB", "A", "CC")
KEYWORDS = ("yes", "no", "up")
LONG_TRANSCRIPT = "ABC " * 20  # 79 characters: more than the ~30 frames of a 0.6 s clip


def write_corpus(root: Path, *, train: int = 8, valid: int = 2, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True)
    for split, count in (("train", train), ("valid", valid)):
        lines = ["path\ttranscript\tkeyword"]
        for i in range(count):
            seconds = round(float(rng.uniform(0.6, 1.2)), 3)
            name = f"audio/{split}_{i:02d}.wav"
            sf.write(root / name, chirp_with_noise(rng, seconds), SAMPLE_RATE, subtype="PCM_16")
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
            if split == "train" and i == 0:
                words = LONG_TRANSCRIPT
            lines.append(f"{name}\t{words}\t{KEYWORDS[i % len(KEYWORDS)]}")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


TINY_FT = (
    "train.cpu=true",
    "seed=3",
    "data.max_batch_seconds=2.5",
    "data.num_workers=0",
    "model.family=finetune",
    "model.preset=tiny",
    "model.config.encoder.num_layers=2",
    "model.config.masking.mask_prob=0.2",
    "optim.lr=0.002",
    "optim.weight_decay=0.0",
    "schedule.kind=tri_stage",
    "train.log_every=1",
    "train.valid_every=1000",
    "train.save_every=1000",
)


def ft_overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        *TINY_FT,
        f"data.manifest_dir={corpus / 'manifest'}",
        f"finetune.train={corpus / 'train.tsv'}",
        f"finetune.valid={corpus / 'valid.tsv'}",
        f"run_dir={run_dir}",
        *extra,
    ]
