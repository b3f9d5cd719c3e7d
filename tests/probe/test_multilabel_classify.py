"""classify on a multi-label table: the sigmoid head learns mixtures of tones; mAP is the headline; bad labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.probe_table import read_table
from ssl_audio.probe.featurizer import mfcc_featurizer
from ssl_audio.probe.tasks import ProbeConfig, run_probe
from ssl_audio.probe.tasks.multilabel import multi_label_targets

TONES = {"low": 300.0, "mid": 900.0, "high": 2500.0, "siren": 5000.0}  # siren: a class unseen in training


def _write_split(root: Path, split: str, sets: list[tuple[str, ...]], rng: np.random.Generator) -> Path:
    t = np.arange(round(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
    lines = ["path\tevents"]
    for i, names in enumerate(sets):
        wave = sum(np.sin(2 * np.pi * TONES[n] * rng.uniform(0.97, 1.03) * t) for n in names)
        wave = 0.2 * wave + 0.003 * rng.standard_normal(len(t))
        sf.write(root / f"{split}{i}.wav", wave.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        lines.append(f"{split}{i}.wav\t{';'.join(names)}")
    path = root / f"{split}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SETS = [("low",), ("mid",), ("high",), ("high", "low"), ("low", "mid"), ("high", "mid"), ("high", "low", "mid")]


def test_multi_label_tones_reach_full_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = _write_split(tmp_path, "train", SETS * 3, rng)
    test = _write_split(tmp_path, "test", SETS, rng)
    cfg = ProbeConfig(task="classify", train=str(train), test=str(test), epochs=60)
    results = run_probe(cfg, mfcc_featurizer(), cache_dir=tmp_path / "cache")
    assert results["headline"] == "mAP" and results["label_column"] == "events"
    assert set(results["metrics"]) == {"mAP", "micro_f1", "top1_hit"}
    assert results["metrics"]["mAP"] >= 0.95  # three tones an octave and more apart (measured: 1.0)
    assert results["metrics"]["top1_hit"] >= 6 / 7
    assert results["losses"][-1] < results["losses"][0]


def test_multi_label_targets_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train = read_table(_write_split(tmp_path, "train", SETS, rng))
    targets = multi_label_targets(train, train, "events")
    assert targets.names == ("high", "low", "mid")
    assert targets.train[3] == (0, 1) and targets.train[6] == (0, 1, 2) and targets.train[0] == (1,)
    test = read_table(_write_split(tmp_path, "test", [("low",), ("low", "siren")], rng))
    with pytest.raises(ValueError, match=r"test.tsv:3: class 'siren' \(column 'events'\) never occurs"):
        multi_label_targets(train, test, "events")
    bad = read_table(_write_split(tmp_path, "bad", [("low", "low")], rng))
    with pytest.raises(ValueError, match=r"bad.tsv:2: 'events' 'low;low' has an empty or repeated class"):
        multi_label_targets(train, bad, "events")
