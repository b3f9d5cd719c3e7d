"""Label files (ssl_audio/data/labels.py): round trip, header, length and range checks on writing and loading.

Lengths are chosen as multiples of 320 samples so the expected 50 Hz label count is exact; the tolerance is
0.1 s = 5 labels at 50 Hz.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.data.labels import label_classes, load_labels, manifest_hash, read_header, write_labels
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest

SR, RATE, K = 16_000, 50.0, 7
LENGTHS = (320 * 40, 320 * 55, 320 * 33)  # 40, 55 and 33 labels at 50 Hz


def write_corpus(root: Path, lengths: tuple[int, ...]) -> Manifest:
    rng = np.random.default_rng(len(lengths))
    (root / "audio").mkdir(parents=True)
    for i, n in enumerate(lengths):
        sf.write(
            root / "audio" / f"utt{i}.wav", (0.2 * rng.standard_normal(n)).astype(np.float32), SR, subtype="PCM_16"
        )
    build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
    return load_manifest(root / "manifest" / "train.tsv")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    m = write_corpus(tmp_path_factory.mktemp("labels"), LENGTHS)
    assert m.num_samples == LENGTHS
    return m


def rows_for(manifest: Manifest, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, K, size=n // 320) for n in manifest.num_samples]


def test_round_trip_and_header(manifest: Manifest, tmp_path: Path):
    rows = rows_for(manifest)
    path = tmp_path / "train.labels"
    write_labels(path, manifest, rows, k=K, rate=RATE, source="mfcc", layer=None, kmeans="abc")
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + len(manifest)
    assert lines[1] == " ".join(map(str, rows[0]))  # plain space-separated integers, one row per line
    header = read_header(path)
    assert header == {
        "k": K, "rate": RATE, "manifest": manifest_hash(manifest), "rows": len(manifest),
        "source": "mfcc", "layer": None, "kmeans": "abc",
    }  # fmt: skip
    labels = load_labels(path, manifest)
    assert labels.rate == RATE and labels.name == "train"
    assert len(labels.per_utterance) == len(rows)
    for got, want in zip(labels.per_utterance, rows, strict=True):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert load_labels(path, manifest, name="km").name == "km"
    assert label_classes([path, path]) == (K, K)


def test_manifest_hash_depends_on_paths_and_lengths_only(manifest: Manifest, tmp_path: Path):
    moved = Manifest(root=tmp_path, paths=manifest.paths, num_samples=manifest.num_samples)
    assert manifest_hash(moved) == manifest_hash(manifest)  # the corpus may move
    longer = Manifest(root=manifest.root, paths=manifest.paths, num_samples=(*manifest.num_samples[:-1], 99_999))
    renamed = Manifest(root=manifest.root, paths=("x.wav", *manifest.paths[1:]), num_samples=manifest.num_samples)
    assert len({manifest_hash(manifest), manifest_hash(longer), manifest_hash(renamed)}) == 3


@pytest.mark.parametrize("delta", [-5, 5, 0])
def test_length_within_a_tenth_of_a_second_is_accepted(manifest: Manifest, tmp_path: Path, delta: int):
    rows = rows_for(manifest)
    rows[1] = np.resize(rows[1], len(rows[1]) + delta)
    write_labels(tmp_path / "a.labels", manifest, rows, k=K, rate=RATE)
    assert len(load_labels(tmp_path / "a.labels", manifest).per_utterance[1]) == 55 + delta


@pytest.mark.parametrize("delta", [-6, 6, 40])
def test_length_off_by_more_than_a_tenth_of_a_second_is_rejected_on_write(
    manifest: Manifest, tmp_path: Path, delta: int
):
    rows = rows_for(manifest)
    rows[1] = np.resize(rows[1], len(rows[1]) + delta)
    path = tmp_path / "a.labels"
    with pytest.raises(ValueError, match=rf"row 2 \({manifest.paths[1]}\): {55 + delta} labels at 50 Hz"):
        write_labels(path, manifest, rows, k=K, rate=RATE)
    assert not path.exists()


def edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_length_edited_by_hand_is_rejected_on_load(manifest: Manifest, tmp_path: Path):
    rows = rows_for(manifest)
    path = tmp_path / "a.labels"
    write_labels(path, manifest, rows, k=K, rate=RATE)
    edit_line(path, 3, " ".join(map(str, rows[1][:49])))  # 49 of 55 labels: 0.12 s short
    with pytest.raises(ValueError, match=rf"a\.labels:3 \({manifest.paths[1]}\): 49 labels at 50 Hz"):
        load_labels(path, manifest)
    edit_line(path, 3, " ".join(map(str, rows[1][:50])))  # 0.1 s short: fine
    assert len(load_labels(path, manifest).per_utterance[1]) == 50


def test_labels_of_another_manifest_are_rejected(manifest: Manifest, tmp_path: Path):
    path = tmp_path / "a.labels"
    write_labels(path, manifest, rows_for(manifest), k=K, rate=RATE)
    other = write_corpus(tmp_path / "other", LENGTHS[::-1])  # same number of rows, other lengths
    with pytest.raises(ValueError, match="another manifest"):
        load_labels(path, other)
    # The same paths and lengths under another root are the same manifest.
    moved = Manifest(root=other.root, paths=manifest.paths, num_samples=manifest.num_samples)
    load_labels(path, moved)


@pytest.mark.parametrize("bad", [K, K + 3, -1])
def test_labels_outside_k_are_rejected(manifest: Manifest, tmp_path: Path, bad: int):
    rows = rows_for(manifest)
    rows[2] = rows[2].copy()
    rows[2][10] = bad
    with pytest.raises(ValueError, match=rf"row 3 \({manifest.paths[2]}\) has labels outside \[0, {K}\)"):
        write_labels(tmp_path / "w.labels", manifest, rows, k=K, rate=RATE)
    # The same by hand in a written file.
    path = tmp_path / "a.labels"
    write_labels(path, manifest, rows_for(manifest), k=K, rate=RATE)
    edit_line(path, 4, " ".join(map(str, rows[2])))
    with pytest.raises(ValueError, match=rf"a\.labels:4 \({manifest.paths[2]}\): labels outside \[0, {K}\)"):
        load_labels(path, manifest)


def test_row_counts_must_match(manifest: Manifest, tmp_path: Path):
    rows = rows_for(manifest)
    with pytest.raises(ValueError, match="2 label rows for 3 manifest rows"):
        write_labels(tmp_path / "a.labels", manifest, rows[:2], k=K, rate=RATE)
    with pytest.raises(ValueError, match="more label rows than the 3 manifest rows"):
        write_labels(tmp_path / "a.labels", manifest, [*rows, rows[0]], k=K, rate=RATE)
    path = tmp_path / "b.labels"
    write_labels(path, manifest, rows, k=K, rate=RATE)
    text = path.read_text()
    path.write_text(text + " ".join(map(str, rows[0])) + "\n")
    with pytest.raises(ValueError, match=r"b\.labels:5: more label rows"):
        load_labels(path, manifest)
    path.write_text("\n".join(text.splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match="2 label rows for 3 manifest rows"):
        load_labels(path, manifest)


def test_header_problems(manifest: Manifest, tmp_path: Path):
    path = tmp_path / "a.labels"
    write_labels(path, manifest, rows_for(manifest), k=K, rate=RATE)
    body = path.read_text().split("\n", 1)[1]
    path.write_text(body)
    with pytest.raises(ValueError, match=r"a\.labels:1: missing"):
        load_labels(path, manifest)
    path.write_text("#{not json\n" + body)
    with pytest.raises(ValueError, match="not JSON"):
        load_labels(path, manifest)
    path.write_text("#" + json.dumps({"k": K, "manifest": manifest_hash(manifest)}) + "\n" + body)
    with pytest.raises(ValueError, match="lacks 'rate'"):
        load_labels(path, manifest)
    path.write_text("#" + json.dumps({"k": K, "rate": RATE, "manifest": manifest_hash(manifest)}) + "\n" + body)
    edit_line(path, 2, "1 2 x")
    with pytest.raises(ValueError, match=r"a\.labels:2: labels must be integers"):
        load_labels(path, manifest)


def test_rejected_write_leaves_no_files(manifest: Manifest, tmp_path: Path):
    rows = rows_for(manifest)
    rows[1] = rows[1][:10]
    with pytest.raises(ValueError, match="row 2"):
        write_labels(tmp_path / "a.labels", manifest, rows, k=K, rate=RATE)
    assert list(tmp_path.iterdir()) == []
