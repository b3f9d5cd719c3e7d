"""`ssl-audio dump-features` (MFCC, two shards) then `ssl-audio kmeans fit` and `kmeans assign`, as real commands.

Oracles: torchaudio's kaldi MFCC + deltas run here on the wavs as soundfile reads them, and the files' raw
bytes; numpy in float64 for the inertia and each frame's nearest centroid, from the centroids read out of
km.faiss. Bad input (--k, corrupt km.faiss) is tested elsewhere: these are the working paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from ssl_audio.data.labels import manifest_hash
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest

pytestmark = pytest.mark.slow  # four subprocesses, each importing torch

SR = 16_000
LENGTHS = (4_800, 6_561, 8_000 + 161, 9_457)  # samples; MFCC frames: (n - 400) // 160 + 1
FRAMES = tuple((n - 400) // 160 + 1 for n in LENGTHS)
REPO = Path(__file__).resolve().parents[2]
F32_EPS = float(np.finfo(np.float32).eps)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def oracle_mfcc(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32")
    assert rate == SR
    mfcc = kaldi.mfcc(torch.from_numpy(data)[None], sample_frequency=SR, use_energy=False)  # (T, 13)
    d1 = AF.compute_deltas(mfcc.T)
    return torch.cat([mfcc.T, d1, AF.compute_deltas(d1)]).T.numpy()  # (T, 39)


class Run:
    """The corpus, and the outputs of the four commands on it."""

    def __init__(self, root: Path) -> None:
        rng = np.random.default_rng(7)
        (root / "audio").mkdir()
        for i, n in enumerate(LENGTHS):
            t = np.arange(n) / SR
            f0, f1 = rng.uniform(100, 3000, size=2)
            wave = 0.4 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2)) + 0.05 * rng.standard_normal(n)
            sf.write(root / "audio" / f"utt{i}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
        build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
        self.tsv = root / "manifest" / "train.tsv"
        self.manifest: Manifest = load_manifest(self.tsv)
        assert self.manifest.num_samples == LENGTHS
        self.feats, self.km, self.labels = root / "feats", root / "km" / "km.faiss", root / "train.labels"
        dump = ("dump-features", "--manifest", str(self.tsv), "--source", "mfcc", "--out", str(self.feats))
        self.dumped = [ok(cli(*dump, "--num-shards", "2", "--shard", str(s))) for s in (0, 1)]
        self.fitted = ok(
            cli("kmeans", "fit", "--features", str(self.feats), "--k", "3", "--max-points", "100000",
                      "--iterations", "10", "--seed", "0", "--out", str(self.km))
        )  # fmt: skip
        self.assigned = ok(
            cli("kmeans", "assign", "--model", str(self.km), "--features", str(self.feats),
                      "--manifest", str(self.tsv), "--out", str(self.labels))
        )  # fmt: skip

    def frames(self) -> list[np.ndarray]:
        """(T, 39) per manifest row, read from the shards' raw float32 bytes and their JSON lengths."""
        blocks = []
        for shard in (0, 1):
            stem = self.feats / f"shard{shard:04d}of0002"
            lengths = json.loads(stem.with_suffix(".json").read_text())["lengths"]
            data = np.fromfile(stem.with_suffix(".f32"), dtype=np.float32).reshape(-1, 39)
            blocks += np.split(data, np.cumsum(lengths)[:-1])
        return blocks


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(tmp_path_factory.mktemp("cli_verbs"))


def test_dump_features_writes_two_shards_of_kaldi_mfcc(run: Run) -> None:
    for shard, out in enumerate(run.dumped):
        assert out.strip() == f"dump-features: wrote {run.feats / f'shard{shard:04d}of0002.json'} (mfcc)"
    assert sorted(p.name for p in run.feats.iterdir()) == [
        "shard0000of0002.f32", "shard0000of0002.json", "shard0001of0002.f32", "shard0001of0002.json",
    ]  # fmt: skip
    for shard, (first, last) in enumerate(((0, 2), (2, 4))):  # rows [s * 4 // 2, (s + 1) * 4 // 2)
        stem = run.feats / f"shard{shard:04d}of0002"
        meta = json.loads(stem.with_suffix(".json").read_text())
        assert meta == {
            "source": "mfcc", "layer": None, "frame_rate": 100.0, "window": 400, "offset": 0, "dim": 39,
            "rows": [first, last],
            "lengths": list(FRAMES[first:last]), "manifest": manifest_hash(run.manifest), "shard": shard,
            "num_shards": 2,
        }  # fmt: skip
        assert stem.with_suffix(".f32").stat().st_size == sum(FRAMES[first:last]) * 39 * 4
    for row, block in enumerate(run.frames()):
        expected = oracle_mfcc(run.manifest.audio_path(row))
        assert block.shape == expected.shape == (FRAMES[row], 39)
        # The same fp32 computation in another process: only a different summation order could move it. A cepstral
        # coefficient is a DCT of 23 log-mel energies of |x| < 30: < 23 ulp(30) = 4e-5 apart; deltas mix 9 frames
        # with weights of sum |w| < 1. atol 1e-4 (and rel 1e-5 for c0); a frame or row out of place moves values ~1.
        np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-4, err_msg=f"row {row}")


def test_kmeans_fit_saves_centroids_with_their_inertia(run: Run) -> None:
    total = sum(FRAMES)
    assert run.fitted.startswith(f"kmeans fit: k=3 on {total} of {total} frames, inertia ")
    assert run.fitted.rstrip().endswith(f"-> {run.km}")
    index = faiss.read_index(str(run.km))
    assert (index.ntotal, index.d) == (3, 39)
    centroids = index.reconstruct_n(0, 3).astype(np.float64)
    points = np.concatenate(run.frames()).astype(np.float64)
    squared = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)  # (N, 3) in float64
    nearest = squared.argmin(1)
    meta = json.loads(Path(str(run.km) + ".json").read_text())
    counts = np.bincount(nearest, minlength=3)
    tiny = int(((counts > 0) & (counts < 0.1 * counts.mean())).sum())
    assert {k: meta[k] for k in ("k", "dim", "source", "layer", "frame_rate", "empty_clusters", "tiny_clusters")} == {
        "k": 3, "dim": 39, "source": "mfcc", "layer": None, "frame_rate": 100.0, "empty_clusters": 0,
        "tiny_clusters": tiny,
    }  # fmt: skip
    # faiss measures |x|^2 - 2 x.c + |c|^2 in fp32: each distance is off by up to ~4 eps (|x|^2 + |c|^2), and the
    # fp32 sum of N of them by N eps more. Bound computed from these points; a wrong centroid or point is far more.
    inertia = squared.min(1).sum()
    bound = 4 * F32_EPS * ((points**2).sum() + (centroids[nearest] ** 2).sum()) + total * F32_EPS * inertia
    assert abs(meta["inertia"] - inertia) <= bound, (meta["inertia"], inertia, bound)
    assert bound < 1e-3 * inertia  # the bound stays tight enough to catch a frame assigned to the wrong centroid
    # the centroids are trained (not the seeds): a k-means fixed point, each the mean of the frames nearest to it
    # (10 Lloyd iterations on 4 chirps converge). faiss sums <= 173 frames of |x| < 60 in fp32: < 173 eps 60 = 1e-3.
    for c in range(3):
        np.testing.assert_allclose(centroids[c], points[nearest == c].mean(0), rtol=0, atol=2e-3)


def test_kmeans_assign_labels_every_frame_with_its_nearest_centroid(run: Run) -> None:
    assert run.assigned.strip() == f"kmeans assign: labels -> {run.labels}"
    lines = run.labels.read_text().splitlines()
    header = json.loads(lines[0][1:])
    kmeans_hash = hashlib.sha256(run.km.read_bytes()).hexdigest()[:16]
    assert lines[0].startswith("#") and len(lines) == 1 + len(LENGTHS)
    assert {k: header[k] for k in ("k", "rate", "rows", "source", "layer", "kmeans", "manifest")} == {
        "k": 3, "rate": 100.0, "rows": len(LENGTHS), "source": "mfcc", "layer": None, "kmeans": kmeans_hash,
        "manifest": manifest_hash(run.manifest),
    }  # fmt: skip
    centroids = faiss.read_index(str(run.km)).reconstruct_n(0, 3).astype(np.float64)
    ambiguous = 0
    for row, (line, block) in enumerate(zip(lines[1:], run.frames())):
        labels = np.array(line.split(), dtype=np.int64)
        assert labels.shape == (FRAMES[row],)
        x = block.astype(np.float64)
        squared = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)  # (T, 3)
        order = np.sort(squared, axis=1)
        # faiss's fp32 distances are within 4 eps (|x|^2 + |c|^2) of these: a closer call than that may go either way
        slack = 4 * F32_EPS * ((x**2).sum(1) + (centroids**2).sum(1).max())
        clear = order[:, 1] - order[:, 0] > 2 * slack
        ambiguous += int((~clear).sum())
        np.testing.assert_array_equal(labels[clear], squared.argmin(1)[clear], err_msg=f"row {row}")
        close = squared[np.arange(len(x)), labels] - order[:, 0] <= 2 * slack  # the others: one of the nearest
        assert close.all(), f"row {row}"
    assert ambiguous <= sum(FRAMES) // 100  # near-ties are rare: the exact check covers almost every frame
