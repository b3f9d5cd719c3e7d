"""make_loader(source, DataConfig, split=...): the one factory every caller with a DataConfig uses.

Oracle: the loose-keyword loaders (make_file_loader, make_shard_loader) called with the options training passed
them before the factory existed; the factory must yield the very same batches, crop for crop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.config import DataConfig
from ssl_audio.data.loader import make_file_loader, set_epoch
from ssl_audio.data.manifest import Manifest, load_manifest, write_manifest
from ssl_audio.data.pipeline import make_loader
from ssl_audio.data.shard_dataset import make_shard_loader
from ssl_audio.data.shards import pack_shards

REPO = Path(__file__).resolve().parents[2]
LENGTHS = [8000, 12_000, 16_000, 4000, 6400, 9600, 3200, 11_000]
SEED = 4


def ramp(num_samples: int) -> np.ndarray:
    return (np.arange(num_samples) * 2.0**-17).astype(np.float32)  # exact in float32 and in a FLOAT wav


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    root.mkdir()
    for i, n in enumerate(LENGTHS):
        sf.write(root / f"utt{i}.wav", ramp(n), SAMPLE_RATE, subtype="FLOAT")
    write_manifest(tmp_path / "train.tsv", root, [(f"utt{i}.wav", n) for i, n in enumerate(LENGTHS)])
    return tmp_path / "train.tsv"


@pytest.fixture
def manifest(tsv: Path) -> Manifest:
    return load_manifest(tsv)


def epochs(loader, count: int = 2) -> list[list[tuple[list[int], list[int], torch.Tensor]]]:
    seen = []
    for epoch in range(count):
        set_epoch(loader, epoch)
        seen.append([(b.indices.tolist(), b.offsets.tolist(), b.waves) for b in loader])
    return seen


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(i == j and o == p and torch.equal(w, v) for (i, o, w), (j, p, v) in zip(x, y))
        for x, y in zip(a, b)
    )


def common(data: DataConfig) -> dict:
    return dict(
        max_samples=data.max_samples, max_batch_seconds=data.max_batch_seconds, seed=SEED, target_lufs=data.target_lufs,
        max_bad_fraction=data.max_bad_fraction,
    )  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        DataConfig(max_samples=5000, max_batch_seconds=0.75, bucketing=False, collate="crop", max_bad_fraction=0.2),
        DataConfig(max_samples=7000, max_batch_seconds=1.0, num_buckets=2, target_lufs=-23.0, num_workers=0),
    ],
)
def test_train_split_is_the_configured_random_crop_loader(manifest: Manifest, data: DataConfig) -> None:
    got = make_loader(manifest, data, split="train", seed=SEED)
    want = make_file_loader(
        manifest, random_crop=True, bucketing=data.bucketing, num_buckets=data.num_buckets, collate_mode=data.collate,
        num_workers=data.num_workers, **common(data),
    )  # fmt: skip
    got_epochs, want_epochs = epochs(got), epochs(want)
    assert same(got_epochs, want_epochs)
    assert not same(got_epochs[:1], got_epochs[1:])  # a new order and new crops each epoch
    assert got.max_bad_fraction == data.max_bad_fraction


def test_valid_split_ignores_the_training_options(manifest: Manifest) -> None:
    data = DataConfig(max_samples=5000, max_batch_seconds=0.75, bucketing=False, num_buckets=3, collate="crop")
    got = make_loader(manifest, data, split="valid", seed=SEED)
    want = make_file_loader(
        manifest, random_crop=False, bucketing=True, shuffle=False, collate_mode="pad", num_workers=0, **common(data)
    )
    got_epochs = epochs(got)
    assert same(got_epochs, epochs(want))
    assert same(got_epochs[:1], got_epochs[1:])  # the same batches at every validation
    assert (got.num_workers, make_loader(manifest, data, split="train", seed=SEED).num_workers) == (0, 2)


def test_rank_and_world_split_the_batches(manifest: Manifest) -> None:
    data = DataConfig(max_samples=5000, max_batch_seconds=0.75, num_workers=0)
    ranks = [make_loader(manifest, data, split="train", seed=SEED, rank=r, world=2) for r in (0, 1)]
    wants = [make_file_loader(manifest, random_crop=True, rank=r, world_size=2, **common(data)) for r in (0, 1)]
    for got, want in zip(ranks, wants):
        assert same(epochs(got, 1), epochs(want, 1))
    rows = [sorted(i for b in loader for i in b.indices.tolist()) for loader in ranks]
    assert not set(rows[0]) & set(rows[1])


def test_a_shard_folder_gives_the_shard_loader(tsv: Path, tmp_path: Path) -> None:
    pack_shards(tsv, tmp_path / "shards", shard_seconds=1.0)
    data = DataConfig(max_samples=5000, max_batch_seconds=0.75, collate="crop", num_workers=0, max_bad_fraction=0.1)
    got = make_loader(str(tmp_path / "shards"), data, split="train", seed=SEED)
    want = make_shard_loader(
        tmp_path / "shards", random_crop=True, collate_mode="crop", num_workers=0, label_sets=[], world_size=1,
        **common(data),
    )  # fmt: skip
    assert same(epochs(got), epochs(want))
    assert type(got).__name__ == "ShardLoader" and got.max_bad_fraction == 0.1
    with pytest.raises(ValueError, match="shards serve the train split"):
        make_loader(tmp_path / "shards", data, split="valid", seed=SEED)
    with pytest.raises(ValueError, match="shards serve the train split, with their packed label sets"):
        make_loader(tmp_path / "shards", data, split="train", seed=SEED, labels=[])


def test_an_unknown_split_is_refused(manifest: Manifest) -> None:
    with pytest.raises(ValueError, match=r"split must be 'train' or 'valid', got 'test'"):
        make_loader(manifest, DataConfig(), split="test", seed=0)


@pytest.mark.slow  # a real ssl-audio process: about 10 s on a shared core
def test_data_pass_honours_max_bad_fraction(tmp_path: Path) -> None:
    """data-pass built its loader from a copy of the options that dropped data.max_bad_fraction (always 0.01)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "good.wav", ramp(800), SAMPLE_RATE, subtype="FLOAT")
    sf.write(audio / "silent.wav", np.zeros(800, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    rows = [("good.wav", 800)] * 520 + [("silent.wav", 800)]  # 1 bad in 521: under the default 1 %, over 0
    (tmp_path / "manifest").mkdir()
    write_manifest(tmp_path / "manifest" / "train.tsv", audio, rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({"run_dir": str(tmp_path / "run"), "data": {"manifest_dir": str(tmp_path / "manifest")}})
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "ssl_audio.cli", "data-pass", str(recipe), "data.num_workers=0"]
    done = subprocess.run(  # the default (0.01) passes this corpus, skipping silent.wav
        [*command, "data.max_bad_fraction=0"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ssl-audio data-pass: error: 1 of 521 utterances loaded so far were unusable"), last
    assert "data.max_bad_fraction=0.0" in last and "silent.wav" in last
