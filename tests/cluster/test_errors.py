"""Damaged k-means inputs (km.faiss, its sidecar, shard JSON) and the CLI's error contract.

Every bad input gives `ssl-audio COMMAND: error: ...` on ONE stderr line naming the file and the reason, exit
code 2, and leaves what was there before untouched; a bug (anything but bad input) keeps its traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import soundfile as sf

from ssl_audio import cli
from ssl_audio.cluster.features import FeatureSet, FeatureSource, dump_features, shard_name
from ssl_audio.cluster.kmeans import fit_kmeans, load_kmeans, sample_frames, save_kmeans
from ssl_audio.data.manifest import build_manifests, load_manifest

REPO = Path(__file__).resolve().parents[2]
SR, K = 16_000, 3


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real `ssl-audio` command in a child Python that imports this checkout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, expected: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ssl-audio kmeans: error: ") and expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with manifest/train.tsv, feats/ (2 MFCC shards) and a real km.faiss (k=3) fitted on them."""
    root = tmp_path_factory.mktemp("kmerr")
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    for i, n in enumerate((4_000, 5_600, 4_800)):
        sf.write(root / "audio" / f"u{i}.wav", (0.3 * rng.standard_normal(n)).astype(np.float32), SR, subtype="PCM_16")
    build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
    manifest = load_manifest(root / "manifest" / "train.tsv")
    for shard in range(2):
        dump_features(manifest, FeatureSource(name="mfcc"), root / "feats", num_shards=2, shard=shard)
    features = FeatureSet(root / "feats")
    save_kmeans(root / "km.faiss", fit_kmeans(sample_frames(features, max_points=10_000), K, iterations=5), features)
    return root


def damaged_model(fitted: Path, folder: Path, content: bytes) -> Path:
    """km.faiss with `content`, next to the real sidecar (so only the index itself is wrong)."""
    folder.mkdir()
    model = folder / "km.faiss"
    model.write_bytes(content)
    shutil.copy(fitted / "km.faiss.json", folder / "km.faiss.json")
    with pytest.raises(RuntimeError):  # the oracle: faiss itself cannot read it
        faiss.read_index(str(model))
    return model


def assign(fitted: Path, model: Path, out: Path) -> subprocess.CompletedProcess:
    feats, manifest = fitted / "feats", fitted / "manifest" / "train.tsv"
    return run_cli(
        "kmeans",
        "assign",
        "--model",
        str(model),
        "--features",
        str(feats),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
    )


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_damaged_kmeans_model_is_named_by_assign(fitted: Path, tmp_path: Path, damage: str):
    real = (fitted / "km.faiss").read_bytes()
    content = np.random.default_rng(1).bytes(len(real)) if damage == "random bytes" else real[: len(real) // 2]
    model = damaged_model(fitted, tmp_path / "km", content)
    out = tmp_path / "train.labels"
    out.write_text("#{}\nlabels of an earlier round\n")
    line = assert_one_line_error(assign(fitted, model, out), f"{model}: truncated or not a faiss index (")
    if damage == "truncated":
        assert "(it ends early: " in line
    assert out.read_text() == "#{}\nlabels of an earlier round\n"  # the old labels are kept


def test_sidecar_that_disagrees_or_is_missing_is_named(fitted: Path, tmp_path: Path):
    model = tmp_path / "km.faiss"
    shutil.copy(fitted / "km.faiss", model)
    sidecar = tmp_path / "km.faiss.json"
    with pytest.raises(ValueError, match=rf"^{sidecar}: missing"):
        load_kmeans(model)
    meta = json.loads((fitted / "km.faiss.json").read_text())
    sidecar.write_text(json.dumps({**meta, "k": K + 1}))
    with pytest.raises(ValueError, match=rf"^{model}: holds {K} centroids of dimension 39, but .* says k={K + 1}"):
        load_kmeans(model)
    sidecar.write_text('{"k": 3\n "dim": 39}')
    with pytest.raises(ValueError, match=rf"^{sidecar}:2: not valid JSON \(Expecting ',' delimiter, column 2\)"):
        load_kmeans(model)
    sidecar.write_text(json.dumps({"dim": 39}))
    with pytest.raises(ValueError, match=rf"^{sidecar}: lacks the integer 'k'"):
        load_kmeans(model)
    sidecar.write_text(json.dumps(meta))
    assert load_kmeans(model)[0].ntotal == K  # the real pair still loads


def broken_features(fitted: Path, folder: Path) -> Path:
    """A copy of the dump whose first shard JSON lost a comma after its first key (on line 1)."""
    shutil.copytree(fitted / "feats", folder)
    shard = folder / (shard_name(0, 2) + ".json")
    text = shard.read_text()
    shard.write_text(text.replace(",", "", 1))
    with pytest.raises(json.JSONDecodeError):  # the oracle: it really is broken JSON
        json.loads(shard.read_text())
    return shard


@pytest.mark.slow
def test_broken_shard_json_is_named_by_fit(fitted: Path, tmp_path: Path):
    shard = broken_features(fitted, tmp_path / "feats")
    model = tmp_path / "km.faiss"
    model.write_bytes(b"the model of an earlier round")
    proc = run_cli("kmeans", "fit", "--features", str(tmp_path / "feats"), "--k", "2", "--out", str(model))
    assert_one_line_error(proc, f"{shard}:1: not valid JSON (Expecting ',' delimiter, column ")
    assert model.read_bytes() == b"the model of an earlier round"


def test_shard_json_without_a_key_is_named(fitted: Path, tmp_path: Path):
    shutil.copytree(fitted / "feats", tmp_path / "feats")
    shard = tmp_path / "feats" / (shard_name(1, 2) + ".json")
    meta = json.loads(shard.read_text())
    shard.write_text(json.dumps({k: v for k, v in meta.items() if k != "lengths"}))
    with pytest.raises(ValueError, match=rf"^{shard}: lacks 'lengths'"):
        FeatureSet(tmp_path / "feats")
    shard.write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"^{shard}: expected a JSON object, got list"):
        FeatureSet(tmp_path / "feats")


@pytest.mark.slow
def test_os_error_on_a_named_file_is_one_line(fitted: Path, tmp_path: Path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the model's folder should be\n")
    proc = run_cli("kmeans", "fit", "--features", str(fitted / "feats"), "--k", "2", "--out", str(blocker / "km.faiss"))
    assert_one_line_error(proc, f"{blocker}: File exists")
    assert blocker.read_text() == "a file where the model's folder should be\n"


# --- main(): what becomes one line and what keeps its traceback ---------------------------------------------


def fit_args(fitted: Path, tmp_path: Path) -> list[str]:
    return ["kmeans", "fit", "--features", str(fitted / "feats"), "--k", "2", "--out", str(tmp_path / "km.faiss")]


@pytest.mark.parametrize(
    "error", [TypeError("a bug"), OSError("no file named"), KeyboardInterrupt()], ids=["bug", "nameless", "ctrl-c"]
)
def test_bugs_and_interrupts_keep_their_traceback(fitted: Path, tmp_path: Path, monkeypatch, error: BaseException):
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise error

    monkeypatch.setattr("ssl_audio.cluster.kmeans.fit_kmeans", broken)
    with pytest.raises(type(error)):
        cli.main(fit_args(fitted, tmp_path))


def test_multi_line_value_error_is_printed_as_one_line(fitted: Path, tmp_path: Path, monkeypatch, capsys):
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("x.faiss: first part\n\n  second part\n")

    monkeypatch.setattr("ssl_audio.cluster.kmeans.fit_kmeans", refuse)
    assert cli.main(fit_args(fitted, tmp_path)) == 2
    assert capsys.readouterr().err == "ssl-audio kmeans: error: x.faiss: first part second part\n"


def test_os_error_naming_two_files_names_both(fitted: Path, tmp_path: Path, monkeypatch, capsys):
    def rename_fails(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise FileNotFoundError(2, os.strerror(2), "km.faiss.tmp", None, "km.faiss")  # as os.replace does

    monkeypatch.setattr("ssl_audio.cluster.kmeans.fit_kmeans", rename_fails)
    assert cli.main(fit_args(fitted, tmp_path)) == 2
    assert capsys.readouterr().err == f"ssl-audio kmeans: error: km.faiss.tmp -> km.faiss: {os.strerror(2)}\n"
