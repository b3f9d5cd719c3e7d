"""The label files of one run must agree (ssl_audio/data/labels.py check_label_sets), checked at start-up.

Label files are written by the project's own writer (write_labels) for a small corpus's train.tsv and
valid.tsv; the k-means hashes are file_hash of two different files, as `kmeans assign` records them. A run
whose valid labels came from another k-means model must be refused before anything is trained or written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.cluster.kmeans import file_hash
from ssl_audio.data.labels import check_label_sets, write_labels
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest
from ssl_audio.train.config import load_config, resolve_config
from ssl_audio.train.loop import train

REPO = Path(__file__).resolve().parents[2]
SR, RATE = 16_000, 50.0
LENGTHS = (320 * 40, 320 * 55, 320 * 33, 320 * 47)  # whole numbers of 50 Hz labels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """audio/, manifest/train.tsv and valid.tsv (2 rows each), and two stand-in k-means model files."""
    root = tmp_path_factory.mktemp("labelcheck")
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        (root / split).mkdir()
        for i, n in enumerate(LENGTHS[:2] if split == "train" else LENGTHS[2:]):
            audio = (0.2 * rng.standard_normal(n)).astype(np.float32)
            sf.write(root / split / f"{split}{i}.wav", audio, SR, subtype="PCM_16")
        build_manifests([root / split], root / split / "m", valid_fraction=0.0)
    (root / "manifest").mkdir()
    (root / "train" / "m" / "train.tsv").rename(root / "manifest" / "train.tsv")
    (root / "valid" / "m" / "train.tsv").rename(root / "manifest" / "valid.tsv")
    (root / "km_a.faiss").write_bytes(b"model a")
    (root / "km_b.faiss").write_bytes(b"model b")
    return root


def manifest(corpus: Path, split: str) -> Manifest:
    return load_manifest(corpus / "manifest" / f"{split}.tsv")


def labels(corpus: Path, split: str, name: str, *, k: int = 10, rate: float = RATE, model: str | None = "a") -> str:
    """A real label file for `split` with random classes in [0, k), from k-means model `model` (None: no hash)."""
    m = manifest(corpus, split)
    rng = np.random.default_rng(k)
    rows = [rng.integers(0, k, size=round(n * rate / SR)) for n in m.num_samples]
    header = {} if model is None else {"kmeans": file_hash(corpus / f"km_{model}.faiss")}
    path = corpus / f"{name}.labels"
    write_labels(path, m, rows, k=k, rate=rate, source="mfcc", layer=None, **header)
    return str(path)


def test_labels_of_one_model_pass(corpus: Path):
    check_label_sets([labels(corpus, "train", "t")], [labels(corpus, "valid", "v")])
    check_label_sets([labels(corpus, "train", "t")])  # no valid split: nothing to compare with


def test_valid_labels_of_another_kmeans_model_are_refused_naming_both(corpus: Path):
    train_path, valid_path = labels(corpus, "train", "t"), labels(corpus, "valid", "v_b", model="b")
    theirs, ours = file_hash(corpus / "km_b.faiss"), file_hash(corpus / "km_a.faiss")
    assert theirs != ours
    with pytest.raises(ValueError, match=rf"^{valid_path}: kmeans={theirs} but {train_path} has kmeans={ours}"):
        check_label_sets([train_path], [valid_path])


def test_valid_labels_with_another_k_are_refused_naming_both(corpus: Path):
    train_path, valid_path = labels(corpus, "train", "t10"), labels(corpus, "valid", "v20", k=20)
    with pytest.raises(ValueError, match=rf"^{valid_path}: k=20 but {train_path} has k=10 \(label set 0\)"):
        check_label_sets([train_path], [valid_path])


def test_valid_labels_at_another_rate_are_refused(corpus: Path):
    train_path, valid_path = labels(corpus, "train", "t"), labels(corpus, "valid", "v100", rate=100.0)
    with pytest.raises(ValueError, match=rf"^{valid_path}: rate=100.0 but {train_path} has rate=50.0"):
        check_label_sets([train_path], [valid_path])


def test_without_a_hash_what_is_there_is_compared(corpus: Path):
    train_path = labels(corpus, "train", "t")
    check_label_sets([train_path], [labels(corpus, "valid", "v_nohash", model=None)])  # k and rate agree
    unhashed_k20 = labels(corpus, "valid", "v_nohash20", k=20, model=None)
    with pytest.raises(ValueError, match=rf"^{unhashed_k20}: k=20 but {train_path} has k=10"):
        check_label_sets([train_path], [unhashed_k20])


def test_label_sets_compare_pairwise_and_share_one_rate(corpus: Path):
    t10, t20 = labels(corpus, "train", "t10"), labels(corpus, "train", "t20", k=20)
    v10, v20 = labels(corpus, "valid", "v10"), labels(corpus, "valid", "v20", k=20)
    check_label_sets([t10, t20], [v10, v20])  # two sets of different k, each consistent
    with pytest.raises(ValueError, match=rf"^{v20}: k=20 but {t10} has k=10 \(label set 0\)"):
        check_label_sets([t10, t20], [v20, v10])
    with pytest.raises(ValueError, match="data.valid_labels names 1 label files, data.train_labels 2"):
        check_label_sets([t10, t20], [v10])
    t100 = labels(corpus, "train", "t100", rate=100.0)
    with pytest.raises(ValueError, match=rf"^{t100}: labels at 100 Hz, but {t10} at 50 Hz"):
        check_label_sets([t10, t100])


def test_header_without_k_is_named(corpus: Path, tmp_path: Path):
    path = tmp_path / "nok.labels"
    path.write_text('#{"rate": 50.0}\n1 2 3\n')
    with pytest.raises(ValueError, match=rf"^{path}:1: label header lacks a number 'k'"):
        check_label_sets([str(path)])


def run_overrides(corpus: Path, run_dir: Path, train_path: str, valid_path: str) -> list[str]:
    """A tiny HuBERT run: 1 update on the CPU (so a run that is not refused ends quickly)."""
    return [
        "model.family=hubert", "model.preset=tiny", "train.cpu=true", "train.max_updates=1",
        "data.max_samples=16000", "data.max_batch_seconds=3.0", "data.num_workers=0",
        f"data.manifest_dir={corpus / 'manifest'}", f"run_dir={run_dir}",
        f"data.train_labels=[{train_path}]", f"data.valid_labels=[{valid_path}]",
    ]  # fmt: skip


def test_training_is_refused_before_anything_is_written(corpus: Path, tmp_path: Path):
    train_path, valid_path = labels(corpus, "train", "t"), labels(corpus, "valid", "v_b", model="b")
    cfg = load_config(None, run_overrides(corpus, tmp_path / "run", train_path, valid_path))
    with pytest.raises(ValueError, match=rf"^{valid_path}: kmeans=\w+ but {train_path} has kmeans="):
        resolve_config(cfg)
    with pytest.raises(ValueError, match=rf"^{valid_path}: kmeans="):
        train(cfg)
    assert not (tmp_path / "run").exists()
    good = resolve_config(load_config(None, run_overrides(corpus, tmp_path / "run", train_path, train_path)))
    assert (good.model.config["num_classes"], good.model.config["label_rate"]) == ([10], RATE)


@pytest.mark.slow
def test_pretrain_command_refuses_mismatched_labels_in_one_line(corpus: Path, tmp_path: Path):
    train_path, valid_path = labels(corpus, "train", "t10"), labels(corpus, "valid", "v20", k=20)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "ssl_audio.cli", "pretrain", str(recipe)]
    proc = subprocess.run(
        [*command, *run_overrides(corpus, tmp_path / "run", train_path, valid_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    expected = (
        f"ssl-audio pretrain: error: {valid_path}: k=20 but {train_path} has k=10 (label set 0): valid labels must "
        "come from the k-means model of the train labels"
    )
    assert proc.stderr.strip().splitlines() == [expected], proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()
