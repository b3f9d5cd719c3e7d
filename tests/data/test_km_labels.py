"""fairseq's headerless .km label files (ssl_audio/data/labels.py): read with the rate given, k from dict.km.txt
or the largest label, lengths checked against the audio as for ours; written by assign when the name ends in .km.

The corpus is tests/cluster/test_labels.py's: 40, 55 and 33 labels at 50 Hz, tolerance 5 labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssl_audio.data.config import DataConfig
from ssl_audio.data.labels import check_label_sets, label_classes, load_labels, write_labels
from ssl_audio.data.manifest import Manifest
from ssl_audio.train.config import read_label_shapes
from tests.cluster.test_labels import LENGTHS, write_corpus

ROWS = ["3 1 4 1 5 9 2 6 " * 5, "0 " * 55, "8 " * 33]  # 40, 55 and 33 labels by hand; largest label 9


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return write_corpus(tmp_path_factory.mktemp("km"), LENGTHS)


def write_km(folder: Path, rows: list[str], name: str = "train.km") -> Path:
    path = folder / name
    path.write_text("".join(row.strip() + "\n" for row in rows))
    return path


def test_hand_written_km_file_loads_with_the_rate(manifest, tmp_path):
    path = write_km(tmp_path, ROWS)
    labels = load_labels(path, manifest, rate=50)
    assert labels.rate == 50.0 and labels.name == "train"
    assert [r.tolist() for r in labels.per_utterance] == [[3, 1, 4, 1, 5, 9, 2, 6] * 5, [0] * 55, [8] * 33]
    assert label_classes([path], 50) == (10,)  # no dict.km.txt: the largest label + 1


def test_k_comes_from_fairseqs_dict_file(manifest, tmp_path):
    path = write_km(tmp_path, ROWS)
    (tmp_path / "dict.km.txt").write_text("".join(f"{c} 1\n" for c in range(12)))
    assert label_classes([path], 50) == (12,)
    shapes = read_label_shapes(DataConfig(train_labels=(str(path),), label_rate=50))
    assert shapes.num_classes == (12,) and shapes.rate == 50.0
    (tmp_path / "dict.km.txt").write_text("".join(f"{c} 1\n" for c in range(9)))  # label 9 is outside [0, 9)
    with pytest.raises(ValueError, match=r"train\.km:1 \(.*utt0.*\): labels outside \[0, 9\)"):
        load_labels(path, manifest, rate=50)


def test_lengths_are_checked_and_the_rate_is_required(manifest, tmp_path):
    path = write_km(tmp_path, ROWS)
    with pytest.raises(ValueError, match=r"train\.km:1: missing .* headerless fairseq \.km file set data\.label_rate"):
        load_labels(path, manifest)
    with pytest.raises(ValueError, match=r"train\.km:1 .*40 labels at 100 Hz"):  # 40 labels are 0.4 s at 100 Hz
        load_labels(path, manifest, rate=100)
    short = write_km(tmp_path, [ROWS[0], "0 " * 49, ROWS[2]], "short.km")  # 6 labels short of 55 > 5
    with pytest.raises(ValueError, match=r"short\.km:2 .*utt1"):
        load_labels(short, manifest, rate=50)
    missing = write_km(tmp_path, ROWS[:2], "missing.km")
    with pytest.raises(ValueError, match=r"missing\.km: 2 label rows for 3 manifest rows"):
        load_labels(missing, manifest, rate=50)
    with pytest.raises(ValueError, match=r"train\.km:1: labels must be integers"):
        load_labels(write_km(tmp_path, ["1 x 2"] + ROWS[1:]), manifest, rate=50)


def test_write_headerless_round_trip_and_our_header_keeps_its_rate(manifest, tmp_path):
    rows = [np.array(r.split(), dtype=np.int64) for r in ROWS]
    out = tmp_path / "valid.km"
    write_labels(out, manifest, rows, k=10, rate=50, headerless=True)
    assert out.read_text().splitlines()[0] == ROWS[0].strip()  # no header line
    assert (tmp_path / "dict.km.txt").read_text().splitlines() == [f"{c} 1" for c in range(10)]
    assert [r.tolist() for r in load_labels(out, manifest, rate=50).per_utterance] == [r.tolist() for r in rows]
    ours = tmp_path / "train.labels"
    write_labels(ours, manifest, rows, k=10, rate=50)
    load_labels(ours, manifest, rate=50)
    with pytest.raises(ValueError, match=r"train\.labels:1: labels at 50 Hz, but data\.label_rate is 100"):
        load_labels(ours, manifest, rate=100)
    check_label_sets([ours], [out], 50)  # one set, one file of each layout: k and rate agree
    other = tmp_path / "other"
    other.mkdir()
    (other / "dict.km.txt").write_text("".join(f"{c} 1\n" for c in range(12)))
    with pytest.raises(ValueError, match=r"valid\.km: k=12 but .*train\.labels has k=10"):
        check_label_sets([ours], [write_km(other, ROWS, "valid.km")], 50)
