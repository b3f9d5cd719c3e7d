"""k-means: frame sampling, faiss fitting, saving, label assignment (and, slow, the hubert-iterate driver).

Oracles: frame indices written into the features (so a sample says which frames it holds), Gaussian blobs
with known centres matched by the Hungarian algorithm, numpy nearest-centroid distances and counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import chisquare

from ssl_audio.cluster.features import FeatureSet, FeatureSource, dump_features, shard_name
from ssl_audio.cluster.kmeans import (
    KMeansResult,
    assign_labels,
    file_hash,
    fit_kmeans,
    kmeans_plusplus,
    load_kmeans,
    sample_frames,
    save_kmeans,
)
from ssl_audio.data.labels import load_labels, manifest_hash, read_header
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest

SR = 16_000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small problems: one thread is faster on shared cores, and makes faiss runs reproducible."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def write_dump(folder: Path, blocks: list[np.ndarray], *, num_shards: int = 2, manifest: str = "m") -> FeatureSet:
    """Shards in the on-disk format of dump_features (frames .f32 + JSON sidecar), from given (T, D) blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    dim = blocks[0].shape[1]
    for shard in range(num_shards):
        first, last = shard * len(blocks) // num_shards, (shard + 1) * len(blocks) // num_shards
        part = blocks[first:last]
        stem = folder / shard_name(shard, num_shards)
        data = np.concatenate(part) if part else np.zeros((0, dim))
        stem.with_suffix(".f32").write_bytes(data.astype(np.float32).tobytes())
        meta = {
            "source": "test", "layer": None, "frame_rate": 100.0, "dim": dim, "rows": [first, last],
            "lengths": [len(b) for b in part], "manifest": manifest, "shard": shard, "num_shards": num_shards,
        }  # fmt: skip
        stem.with_suffix(".json").write_text(json.dumps(meta))
    return FeatureSet(folder)


def index_blocks(lengths: list[int]) -> list[np.ndarray]:
    """(T, 2) blocks whose frames hold their global index (exact in float32) and a constant."""
    blocks, start = [], 0
    for n in lengths:
        idx = np.arange(start, start + n, dtype=np.float32)
        blocks.append(np.stack([idx, np.full(n, 7.0, np.float32)], axis=1))
        start += n
    return blocks


# --- sampling ---------------------------------------------------------------------------------------------


# A first block larger than the reservoir, empty blocks, blocks smaller and larger than it.
LENGTHS = [90, 0, 13, 41, 0, 150, 7, 1, 60, 38, 100, 0, 55, 45]  # 600 frames


def test_reservoir_sample_is_exact_in_size_and_uniform(tmp_path: Path):
    features = write_dump(tmp_path, index_blocks(LENGTHS), num_shards=3)
    total, max_points, seeds = sum(LENGTHS), 60, 400
    hits = np.zeros(total, np.int64)
    for seed in range(seeds):
        sample = sample_frames(features, max_points=max_points, seed=seed)
        assert sample.shape == (max_points, 2) and sample.dtype == np.float32 and sample.flags.c_contiguous
        assert (sample[:, 1] == 7.0).all()  # whole frames, not mixed rows
        idx = sample[:, 0].astype(np.int64)
        assert len(np.unique(idx)) == max_points  # no frame twice
        hits[idx] += 1
    # Every frame is in the sample with probability max_points / total: expected 40 hits each.
    expected = seeds * max_points / total
    assert chisquare(hits, np.full(total, expected)).pvalue > 1e-3
    # No drift along the stream (Algorithm R's classic bugs favour early or late frames).
    thirds = [part.mean() / expected for part in np.array_split(hits, 3)]
    assert all(abs(t - 1) < 0.05 for t in thirds), thirds


def test_reservoir_is_deterministic_and_keeps_everything_when_small(tmp_path: Path):
    features = write_dump(tmp_path, index_blocks(LENGTHS))
    np.testing.assert_array_equal(
        sample_frames(features, max_points=50, seed=3), sample_frames(features, max_points=50, seed=3)
    )
    assert not np.array_equal(
        sample_frames(features, max_points=50, seed=3), sample_frames(features, max_points=50, seed=4)
    )
    everything = sample_frames(features, max_points=1000, seed=0)
    np.testing.assert_array_equal(everything[:, 0], np.arange(600))
    exactly = sample_frames(features, max_points=600, seed=0)
    np.testing.assert_array_equal(exactly[:, 0], np.arange(600))


def test_fraction_keeps_about_that_share_uniformly(tmp_path: Path):
    lengths = [2_000, 0, 3_000, 5_000, 10_000]  # 20k frames
    features = write_dump(tmp_path, index_blocks(lengths))
    total, fraction = sum(lengths), 0.25
    sample = sample_frames(features, fraction=fraction, seed=0)
    sd = np.sqrt(total * fraction * (1 - fraction))
    assert abs(len(sample) - total * fraction) < 4 * sd
    idx = sample[:, 0].astype(np.int64)
    assert (np.diff(idx) > 0).all()  # stream order, no repeats
    per_quarter = np.histogram(idx, bins=4, range=(0, total))[0]
    assert (abs(per_quarter - total / 4 * fraction) < 4 * np.sqrt(total / 4 * fraction)).all()
    np.testing.assert_array_equal(sample_frames(features, fraction=1.0)[:, 0], np.arange(total))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"max_points": 5, "fraction": 0.5}, "exactly one"),
        ({"fraction": 0.0}, "sample-fraction"),
        ({"fraction": 1.5}, "sample-fraction"),
    ],
)
def test_sampling_arguments_are_checked(tmp_path: Path, kwargs: dict, message: str):
    features = write_dump(tmp_path, index_blocks([10, 10]))
    with pytest.raises(ValueError, match=message):
        sample_frames(features, **kwargs)


# --- fitting ----------------------------------------------------------------------------------------------


def blobs(k: int, dim: int, seed: int, std: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of k Gaussian blobs (centres ~ N(0, 5^2), far apart compared with std), centres and blob ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (k, dim))
    sizes = rng.integers(300, 700, k)
    ids = np.repeat(np.arange(k), sizes)
    points = (centres[ids] + std * rng.standard_normal((len(ids), dim))).astype(np.float32)
    return points, centres, ids


def match(found: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each true centre, the index of its matched centroid (Hungarian on squared distances) and the error."""
    cost = ((found[:, None, :].astype(np.float64) - true[None, :, :]) ** 2).sum(-1)  # (k found, k true)
    rows, cols = linear_sum_assignment(cost)
    order = rows[np.argsort(cols)]
    return order, np.sqrt(cost[order, np.arange(len(true))])


def oracle_inertia(points: np.ndarray, centroids: np.ndarray) -> tuple[float, np.ndarray]:
    d = ((points[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1)
    return float(d.min(axis=1).sum()), d.argmin(axis=1)


def test_fit_recovers_well_separated_blobs_and_reports_inertia_and_usage():
    k = 6
    points, centres, ids = blobs(k, 8, seed=0)
    result = fit_kmeans(points, k, restarts=20, seed=0)
    assert result.centroids.shape == (k, 8) and result.centroids.dtype == np.float32
    order, error = match(result.centroids, centres)
    assert error.max() < 0.1, error
    # Every point was used (no subsampling inside faiss): a converged centroid is its blob's exact mean.
    means = np.stack([points[ids == j].astype(np.float64).mean(0) for j in range(k)])
    np.testing.assert_allclose(result.centroids[order], means, atol=1e-4)
    inertia, nearest = oracle_inertia(points, result.centroids)
    assert result.inertia == pytest.approx(inertia, rel=1e-4)
    np.testing.assert_array_equal(result.counts, np.bincount(nearest, minlength=k))
    np.testing.assert_array_equal(result.counts[order], np.bincount(ids, minlength=k))
    assert (result.empty, result.tiny) == (0, 0)


def test_fit_with_default_settings_recovers_well_separated_blobs():
    """What k-means++ seeding (fairseq's MiniBatchKMeans, sklearn's KMeans) does with a single initialisation."""
    k = 10
    points, centres, _ = blobs(k, 8, seed=1)
    result = fit_kmeans(points, k, seed=0)
    _, error = match(result.centroids, centres)
    assert error.max() < 0.1, error


def test_empty_and_tiny_clusters_are_counted():
    result = KMeansResult(centroids=np.zeros((5, 2), np.float32), inertia=0.0, counts=np.array([0, 5, 100, 100, 100]))
    assert (result.empty, result.tiny) == (1, 1)  # mean 61, so under 6.1 points is tiny


def test_fit_errors():
    points, _, _ = blobs(3, 4, seed=2)
    with pytest.raises(ValueError, match="at least k=10 points, got 5"):
        fit_kmeans(points[:5], 10)
    with pytest.raises(ValueError, match="expected \\(N, D\\)"):
        fit_kmeans(points[:, 0], 2)
    bad = points.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf in 2 frames"):
        fit_kmeans(bad, 3)


def seeding_cost(points: np.ndarray, centres: np.ndarray) -> float:
    return oracle_inertia(points, centres)[0]


def test_plusplus_picks_distinct_pool_points_one_per_separated_blob():
    k = 12
    points, _, ids = blobs(k, 8, seed=3)
    centres = kmeans_plusplus(points, k, seed=0)
    rows = [int(np.flatnonzero((points == c).all(axis=1))[0]) for c in centres]  # every centre is an input point
    assert len(set(rows)) == k
    assert sorted(ids[rows].tolist()) == list(range(k))  # greedy trials never put two seeds in one blob


def test_greedy_plusplus_seeds_as_well_as_scikit_learn_and_better_than_plain():
    """Oracle: sklearn's kmeans_plusplus (greedy, 2 + ln k trials) on the same overlapping mixture."""
    from sklearn.cluster import kmeans_plusplus as sklearn_plusplus

    rng = np.random.default_rng(4)
    means = rng.normal(0, 3, (60, 6))
    points = (means[rng.integers(60, size=3000)] + rng.standard_normal((3000, 6))).astype(np.float32)
    k = 40
    ours = np.mean([seeding_cost(points, kmeans_plusplus(points, k, sample=3000, seed=s)) for s in range(8)])
    plain = np.mean([seeding_cost(points, kmeans_plusplus(points, k, sample=3000, trials=1, seed=s)) for s in range(8)])
    theirs = np.mean([seeding_cost(points, sklearn_plusplus(points, k, random_state=s)[0]) for s in range(8)])
    assert ours < 1.05 * theirs, (ours, theirs)
    assert ours < 0.95 * plain, (ours, plain)


def test_plusplus_copes_with_duplicates_and_a_pool_smaller_than_k():
    points = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 3 distinct points, 30 rows
    centres = kmeans_plusplus(points, 5, seed=0)
    assert centres.shape == (5, 3)
    assert len({tuple(c) for c in centres}) == 3  # every distinct point is a centre before any repeats
    wide = np.random.default_rng(5).standard_normal((400, 4)).astype(np.float32)
    assert len({tuple(c) for c in kmeans_plusplus(wide, 50, sample=10, seed=0)}) == 50  # the pool grows to k


# --- saving and assigning ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mfcc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, FeatureSet]:
    root = tmp_path_factory.mktemp("km")
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    for i, n in enumerate((6_000, 9_001, 4_321, 7_777)):
        sf.write(root / "audio" / f"u{i}.wav", (0.3 * rng.standard_normal(n)).astype(np.float32), SR, subtype="PCM_16")
    build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
    manifest = load_manifest(root / "manifest" / "train.tsv")
    dump_features(manifest, FeatureSource(name="mfcc"), root / "feats", num_shards=2, shard=0)
    dump_features(manifest, FeatureSource(name="mfcc"), root / "feats", num_shards=2, shard=1)
    return manifest, FeatureSet(root / "feats")


def test_save_assign_and_load_labels(mfcc: tuple[Manifest, FeatureSet], tmp_path: Path):
    manifest, features = mfcc
    points = sample_frames(features, max_points=10_000)
    assert len(points) == features.num_frames
    result = fit_kmeans(points, 8, iterations=20)
    model = tmp_path / "km" / "km.faiss"
    save_kmeans(model, result, features)
    index, meta = load_kmeans(model)
    assert (index.d, index.ntotal) == (39, 8)
    assert (meta["k"], meta["dim"], meta["source"], meta["frame_rate"]) == (8, 39, "mfcc", 100.0)
    assert meta["inertia"] == pytest.approx(result.inertia)
    assert (meta["empty_clusters"], meta["tiny_clusters"]) == (result.empty, result.tiny)

    out = assign_labels(model, features, manifest, tmp_path / "labels" / "train.labels")
    header = read_header(out)
    assert (header["k"], header["rate"], header["source"], header["kmeans"]) == (8, 100.0, "mfcc", file_hash(model))
    assert header["manifest"] == manifest_hash(manifest)
    assert (header["window"], header["offset"]) == (400, 0)  # kaldi's frames: [160 j, 160 j + 400)
    labels = load_labels(out, manifest)
    assert (labels.rate, labels.window, labels.offset) == (100.0, 400, 0)
    for block, row in zip(features, labels.per_utterance, strict=True):
        assert len(row) == len(block)
        d = ((block[:, None, :].astype(np.float64) - result.centroids[None].astype(np.float64)) ** 2).sum(-1)
        chosen = d[np.arange(len(row)), row]
        assert (chosen <= d.min(axis=1) * (1 + 1e-5) + 1e-5).all()  # the nearest centroid (up to float32 ties)

    km = assign_labels(model, features, manifest, tmp_path / "labels" / "train.km")  # fairseq's layout
    assert km.read_text().splitlines() == out.read_text().splitlines()[1:]  # the same rows, no header
    assert len((tmp_path / "labels" / "dict.km.txt").read_text().splitlines()) == 8


def test_assign_rejects_wrong_dimension_and_other_manifests(mfcc: tuple[Manifest, FeatureSet], tmp_path: Path):
    manifest, features = mfcc
    five_dim = fit_kmeans(np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32), 3)
    save_kmeans(tmp_path / "km5.faiss", five_dim, features)
    with pytest.raises(ValueError, match="centroids have dimension 5, features .* have 39"):
        assign_labels(tmp_path / "km5.faiss", features, manifest, tmp_path / "x.labels")
    assert not (tmp_path / "x.labels").exists()
    with pytest.raises(ValueError, match="no k-means model"):
        assign_labels(tmp_path / "missing.faiss", features, manifest, tmp_path / "x.labels")
    fitted = fit_kmeans(sample_frames(features, max_points=1000), 4, iterations=5)
    save_kmeans(tmp_path / "km.faiss", fitted, features)
    subset = Manifest(root=manifest.root, paths=manifest.paths[:2], num_samples=manifest.num_samples[:2])
    with pytest.raises(ValueError, match="another manifest"):
        assign_labels(tmp_path / "km.faiss", features, subset, tmp_path / "x.labels")


# --- the hubert-iterate driver (slow) ---------------------------------------------------------------------


TINY_HUBERT = {
    "seed": 3,
    "data": {"max_samples": 20_000, "max_batch_seconds": 3.0, "num_workers": 0},
    "model": {
        "family": "hubert",
        "preset": "tiny",
        "config": {"encoder": {"dropout": 0.0, "attention_dropout": 0.0, "projection_dropout": 0.0, "layerdrop": 0.0}},
    },
    "schedule": {"warmup_updates": 1},
    "train": {"cpu": True, "max_updates": 2, "valid_every": 1000, "valid_max_batches": 1, "save_every": 1000,
              "log_every": 1},
}  # fmt: skip


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def iterated(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (config, summaries, corpus folder)
    """Two rounds of hubert-iterate (MFCC k=5, then layer 2 k=4; 2 updates each) on 8 clips of 1-1.6 s."""
    from ssl_audio.cluster.iterate import IterateConfig, IterationConfig, run_iterations

    root = tmp_path_factory.mktemp("iterate")
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    for i in range(8):
        n = int(rng.uniform(1.0, 1.6) * SR)
        t = np.arange(n) / SR
        wave = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(n)
        sf.write(root / "audio" / f"c{i}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
    build_manifests([root / "audio"], root / "manifest", valid_fraction=0.25)
    pretrain = {**TINY_HUBERT, "data": {**TINY_HUBERT["data"], "manifest_dir": str(root / "manifest")}}
    cfg = IterateConfig(
        run_dir=str(root / "run"),
        pretrain=pretrain,
        iterations=(
            IterationConfig(k=5, max_points=2_000, kmeans_iterations=5),
            IterationConfig(source="previous", layer=2, k=4, max_points=2_000, kmeans_iterations=5),
        ),
    )
    return cfg, run_iterations(cfg, progress=False), root


def copy_run(cfg, tmp_path: Path):  # noqa: ANN001, ANN201
    """The finished run copied (with its mtimes) to a fresh folder, and the config pointing there."""
    import dataclasses
    import shutil

    shutil.copytree(cfg.run_dir, tmp_path / "run")
    return dataclasses.replace(cfg, run_dir=str(tmp_path / "run")), tmp_path / "run"


@pytest.mark.slow
def test_hubert_iterate_writes_both_rounds(iterated):  # noqa: ANN001
    cfg, summaries, root = iterated
    run = Path(cfg.run_dir)
    on_disk = json.loads((run / "summary.json").read_text())
    assert [s["iteration"] for s in on_disk] == [1, 2] and on_disk == json.loads(json.dumps(summaries))
    assert (on_disk[0]["source"], on_disk[0]["k"]) == ("mfcc", 5)
    assert (on_disk[1]["layer"], on_disk[1]["k"]) == (2, 4)
    assert on_disk[1]["source"] == on_disk[0]["checkpoint"]
    assert all("loss" in s["valid"] for s in on_disk)
    assert read_header(run / "iter1" / "labels" / "train.labels")["rate"] == 100.0
    assert read_header(run / "iter2" / "labels" / "valid.labels")["rate"] == 50.0
    for number in (1, 2):  # MFCC frames and the tiny conv stack's both cover 400 samples from sample 0
        header = read_header(run / f"iter{number}" / "labels" / "train.labels")
        assert (header["window"], header["offset"]) == (400, 0)
    for number, k in ((1, 5), (2, 4)):
        assert Path(on_disk[number - 1]["checkpoint"]).parent == run / f"iter{number}" / "model"
        assert load_kmeans(run / f"iter{number}" / "km.faiss")[1]["k"] == k
        manifest = load_manifest(root / "manifest" / "train.tsv")
        assert (
            max(int(r.max()) for r in load_labels(run / f"iter{number}/labels/train.labels", manifest).per_utterance)
            < k
        )


STAGES = ("dump_features", "sample_frames", "fit_kmeans", "save_kmeans", "assign_labels", "train")


def count_stage_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap every stage function hubert-iterate calls (they still run) and count the calls, by name."""
    import ssl_audio.cluster.iterate as iterate
    import ssl_audio.train.loop as loop

    calls = dict.fromkeys(STAGES, 0)
    for name in STAGES:
        module = loop if name == "train" else iterate  # run_iterations imports train inside the function
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.slow
def test_hubert_iterate_again_skips_every_stage(iterated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001
    from ssl_audio.cluster.iterate import run_iterations

    cfg, summaries, _ = iterated
    cfg, run = copy_run(cfg, tmp_path)
    before = mtimes(run)
    calls = count_stage_calls(monkeypatch)
    again = run_iterations(cfg, progress=False)
    after = mtimes(run)
    assert {p: t for p, t in after.items() if p != "summary.json"} == {
        p: t for p, t in before.items() if p != "summary.json"
    }
    assert [Path(s["checkpoint"]).name for s in again] == [Path(s["checkpoint"]).name for s in summaries]
    assert calls == dict.fromkeys(STAGES, 0)


@pytest.mark.slow
def test_hubert_iterate_redoes_deleted_labels_and_nothing_before(iterated, tmp_path: Path, monkeypatch):  # noqa: ANN001
    from ssl_audio.cluster.iterate import run_iterations

    cfg, _, _ = iterated
    cfg, run = copy_run(cfg, tmp_path)
    before = mtimes(run)
    labels = run / "iter2" / "labels" / "train.labels"
    old_labels = labels.read_text()
    labels.unlink()
    calls = count_stage_calls(monkeypatch)
    run_iterations(cfg, progress=False)
    after = mtimes(run)
    changed = {p for p in after if after[p] != before.get(p)}
    assert "iter2/labels/train.labels" in changed
    assert not {p for p in changed if p.startswith("iter1/")}
    assert not {p for p in changed if p.startswith(("iter2/features/", "iter2/km.faiss", "iter2/kmeans/"))}
    assert labels.read_text() == old_labels  # same k-means on the same features: the same labels again
    # only the label stage ran; the model depends on the labels by content, which came out the same: no training
    assert calls == {**dict.fromkeys(STAGES, 0), "assign_labels": 1}


@pytest.mark.slow
def test_hubert_iterate_again_keeps_the_summary(iterated, tmp_path: Path):  # noqa: ANN001
    from ssl_audio.cluster.iterate import run_iterations

    cfg, summaries, _ = iterated
    cfg, run = copy_run(cfg, tmp_path)
    run_iterations(cfg, progress=False)
    again = json.loads((run / "summary.json").read_text())
    # The validation loss of each round (what the CLI table prints) survives a run that had nothing to do.
    assert [s.get("valid", {}).get("loss") for s in again] == [s["valid"]["loss"] for s in summaries]


@pytest.mark.slow
def test_hubert_iterate_retrains_when_the_labels_change(iterated, tmp_path: Path):  # noqa: ANN001
    import dataclasses

    from ssl_audio.cluster.iterate import run_iterations
    from ssl_audio.models.loading import load_model

    cfg, _, _ = iterated
    cfg, run = copy_run(cfg, tmp_path)
    first = dataclasses.replace(cfg.iterations[0], k=3)  # iteration 1's labels now have 3 classes
    summaries = run_iterations(dataclasses.replace(cfg, iterations=(first, cfg.iterations[1])), progress=False)
    assert read_header(run / "iter1" / "labels" / "train.labels")["k"] == 3
    _, model_cfg = load_model(summaries[0]["checkpoint"])
    assert model_cfg.config["num_classes"] == [3]  # the round-1 model must be trained on these labels
