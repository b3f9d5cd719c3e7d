"""`ssl-audio pack-shards` as a user runs it: what it writes, and one-line refusals that write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.data.labels import write_labels
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest
from ssl_audio.data.shards import load_shard_index, pack_shards

pytestmark = pytest.mark.slow  # each test starts `ssl-audio`, which imports torch: seconds on a shared core


def run_pack(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "ssl_audio.cli", "pack-shards", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):  # 1 s each
        sf.write(audio / f"u{i}.flac", 0.3 * np.random.default_rng(i).standard_normal(16_000), 16_000)
    build_manifests([audio], tmp_path / "m", valid_fraction=0.0)
    return tmp_path / "m" / "train.tsv"


def test_packs_equal_shards_with_labels(tsv, tmp_path):
    manifest = load_manifest(tsv)
    write_labels(tmp_path / "km.labels", manifest, [np.ones(50, dtype=int)] * 4, k=2, rate=50.0)
    done = run_pack(tsv, "--out", tmp_path / "shards", "--shard-seconds", "2", "--labels", tmp_path / "km.labels")
    assert done.returncode == 0, done.stderr
    index = tmp_path / "shards" / "index.json"
    assert done.stdout == f"pack-shards: 4 rows (0.00 h) in 2 shards of about 2 s, label sets km -> {index}\n"
    packed = load_shard_index(tmp_path / "shards")
    assert [shard.rows for shard in packed.shards] == [(0, 1), (2, 3)]
    assert [s.name for s in packed.labels] == ["km"]


def test_a_bad_manifest_line_is_named_and_nothing_is_written(tsv, tmp_path):
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([*lines[:2], "u1.flac\tmany", *lines[3:]]) + "\n")
    done = run_pack(tsv, "--out", tmp_path / "shards")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"ssl-audio pack-shards: error: {tsv}:3: num_samples must be an integer >= 400, got 'many'\n"
    assert not (tmp_path / "shards").exists()


def test_non_positive_shard_seconds_are_refused(tsv, tmp_path):
    for value in ("0", "-1", "nan"):
        done = run_pack(tsv, "--out", tmp_path / "shards", "--shard-seconds", value)
        assert done.returncode == 2
        assert (
            done.stderr == f"ssl-audio pack-shards: error: --shard-seconds must be finite and > 0, got {float(value)}\n"
        )
    assert not (tmp_path / "shards").exists()


def test_labels_of_another_manifest_are_refused_and_the_old_shards_kept(tsv, tmp_path):
    pack_shards(tsv, tmp_path / "shards")
    before = {path.name: path.read_bytes() for path in (tmp_path / "shards").iterdir()}
    manifest = load_manifest(tsv)
    other = Manifest(root=manifest.root, paths=manifest.paths[:3], num_samples=manifest.num_samples[:3])
    write_labels(tmp_path / "other.labels", other, [np.ones(50, dtype=int)] * 3, k=2, rate=50.0)
    done = run_pack(tsv, "--out", tmp_path / "shards", "--labels", tmp_path / "other.labels")
    assert done.returncode == 2
    assert done.stderr.startswith(f"ssl-audio pack-shards: error: {tmp_path / 'other.labels'}: labels were made for ")
    assert done.stderr.count("\n") == 1
    assert {path.name: path.read_bytes() for path in (tmp_path / "shards").iterdir()} == before
