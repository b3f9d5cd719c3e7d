"""k-means with faiss: sample frames (streaming, bounded memory), fit, save, assign labels.

A fitted model is a faiss index of the centroids (`km.faiss`) with a JSON sidecar (`km.faiss.json`):
k, dimension, feature source, inertia and cluster usage.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ssl_audio.atomic import write_text
from ssl_audio.cluster.features import FeatureSet
from ssl_audio.data.labels import FRAMING_KEYS, manifest_hash, read_header, write_labels
from ssl_audio.data.manifest import Manifest
from ssl_audio.progress import progress

KM_SUFFIX = ".km"  # labels written to a .km file take fairseq's headerless layout (and its dict.km.txt)
logger = logging.getLogger(__name__)
TINY_CLUSTER_FRACTION = 0.1  # a cluster with under 10% of the average share of points counts as tiny


def _is_count(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def sample_frames(
    features: FeatureSet, *, max_points: int | None = None, fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """A uniform sample of frames: each with probability `fraction`, or a reservoir of `max_points`.

    Streams over the shards, so memory is bounded by the sample, never the dump.
    """
    if (max_points is None) == (fraction is None):
        raise ValueError("give exactly one of max_points and fraction")
    if max_points is not None and not (_is_count(max_points) and max_points >= 1):
        raise ValueError(f"--max-points must be an integer >= 1, got {max_points!r}")
    rng = np.random.default_rng(seed)
    if fraction is not None:
        if not 0 < fraction <= 1:  # also refuses NaN
            raise ValueError(f"--sample-fraction must be in (0, 1], got {fraction}")
        blocks = progress(features, total=len(features), desc="sampling frames", unit="utt")
        kept = [block[rng.random(len(block)) < fraction] for block in blocks]
        return np.ascontiguousarray(np.concatenate(kept) if kept else np.zeros((0, features.dim), np.float32))
    reservoir = np.empty((max_points, features.dim), np.float32)
    seen = 0
    for block in progress(features, total=len(features), desc="sampling frames", unit="utt"):
        n = len(block)
        fill = min(max(max_points - seen, 0), n)  # the first max_points frames fill the reservoir
        reservoir[seen : seen + fill] = block[:fill]
        if fill < n:  # Algorithm R: frame number i (0-based) replaces a random slot with probability N / (i + 1)
            index = np.arange(seen + fill, seen + n)
            slots = (rng.random(len(index)) * (index + 1)).astype(np.int64)
            hit = slots < max_points
            reservoir[slots[hit]] = block[fill:][hit]  # for repeated slots the later frame wins, as sequentially
        seen += n
    return reservoir[: min(seen, max_points)]


@dataclass(frozen=True, kw_only=True)
class KMeansResult:
    centroids: np.ndarray  # (k, D)
    inertia: float  # sum of squared distances of the training points to their centroid
    counts: np.ndarray  # (k,) training points per cluster

    @property
    def empty(self) -> int:
        return int((self.counts == 0).sum())

    @property
    def tiny(self) -> int:
        return int(((self.counts > 0) & (self.counts < TINY_CLUSTER_FRACTION * self.counts.mean())).sum())


def kmeans_plusplus(
    points: np.ndarray, k: int, *, sample: int = 5000, trials: int | None = None, seed: int = 0
) -> np.ndarray:
    """Greedy k-means++ seeding on a random subsample of `sample` points (at least k): (k, D) centres.

    Each step draws `trials` candidates (default 2 + ln k, as Arthur & Vassilvitskii and scikit-learn) with
    probability proportional to the squared distance to the nearest centre so far, and keeps the one that
    lowers the total most. On 200k x 768 frames, k = 500 (tools/benchmark_kmeans.py data), greedy seeding
    then 25 Lloyd iterations reached a held-out inertia 0.4-1 % below plain k-means++ then 50.
    """
    rng = np.random.default_rng(seed)
    size = max(sample, k)
    pool = points if len(points) <= size else points[np.sort(rng.choice(len(points), size, replace=False))]
    pool = np.asarray(pool, dtype=np.float32)
    trials = trials or 2 + int(np.log(k))
    squared = (pool**2).sum(axis=1)

    def distances(rows: np.ndarray) -> np.ndarray:  # (R,) pool indices -> (R, N) squared distances
        return np.maximum(squared[rows, None] - 2 * pool[rows] @ pool.T + squared[None, :], 0)

    chosen = [int(rng.integers(len(pool)))]
    nearest = distances(np.array(chosen))[0]  # squared distance to the closest centre so far
    for _ in range(1, k):
        cumulative = np.cumsum(nearest, dtype=np.float64)
        if cumulative[-1] <= 0:  # every point is a centre already (duplicates): any point will do
            candidates = rng.integers(len(pool), size=trials)
        else:
            candidates = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], side="right")
            candidates = np.minimum(candidates, len(pool) - 1)
        after = np.minimum(nearest[None, :], distances(candidates))  # (trials, N)
        best = int(after.sum(axis=1, dtype=np.float64).argmin())
        chosen.append(int(candidates[best]))
        nearest = after[best]
    return pool[chosen].copy()


def fit_kmeans(
    points: np.ndarray, k: int, *, iterations: int = 50, restarts: int = 1, seed: int = 0, threads: int | None = None
) -> KMeansResult:
    """faiss k-means on `points` (N, D) float32, seeded with k-means++; with `restarts`, the run with the lowest
    training inertia wins. faiss's GPU k-means when a GPU build and a GPU are present."""
    counts = [("--k", k), ("--iterations", iterations), ("--restarts", restarts)]
    for flag, value in counts + ([("--threads", threads)] if threads is not None else []):
        if not (_is_count(value) and value >= 1):  # k = 0 divided by zero below, k < 0 gave NaN centroids
            raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"expected (N, D) points, got shape {points.shape}")
    if len(points) < k:
        raise ValueError(f"--k {k}: k-means needs at least k={k} points, got {len(points)} (lower --k or sample more)")
    if not np.isfinite(points).all():
        raise ValueError(f"features hold NaN/Inf in {int((~np.isfinite(points)).any(axis=1).sum())} frames")
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    points = np.ascontiguousarray(points, dtype=np.float32)
    use_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    best: KMeansResult | None = None
    for run in progress(range(max(restarts, 1)), desc=f"k-means k={k} ({iterations} iterations each)", unit="run"):
        kmeans = faiss.Kmeans(
            points.shape[1], k, niter=iterations, seed=seed + run, verbose=False, gpu=use_gpu,
            max_points_per_centroid=len(points) // k + 1,  # use every sampled point: sampling happened upstream
        )  # fmt: skip
        # faiss starts from k random points; k-means++ seeding avoids most of its bad local optima.
        kmeans.train(points, init_centroids=kmeans_plusplus(points, k, seed=seed + run))
        distances, labels = kmeans.index.search(points, 1)
        result = KMeansResult(
            centroids=kmeans.centroids.copy(),
            inertia=float(distances.sum()),
            counts=np.bincount(labels[:, 0], minlength=k),
        )
        logger.debug(
            "k-means run %d of %d: inertia %.6g, %d empty clusters", run + 1, restarts, result.inertia, result.empty
        )
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def save_kmeans(path: str | Path, result: KMeansResult, features: FeatureSet) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatL2(result.centroids.shape[1])
    index.add(result.centroids)
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    meta = {
        "k": len(result.centroids), "dim": int(result.centroids.shape[1]), "source": features.source,
        "layer": features.layer, "frame_rate": features.frame_rate, "inertia": result.inertia,
        "empty_clusters": result.empty, "tiny_clusters": result.tiny,
    }  # fmt: skip
    write_text(str(path) + ".json", json.dumps(meta, indent=1))


def load_kmeans(path: str | Path) -> tuple[faiss.Index, dict]:
    """The centroid index and its sidecar, checked to agree; errors name the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no k-means model (run `ssl-audio kmeans fit`)")
    try:  # from bytes read here: an unreadable file is an OSError naming it, a damaged one faiss's RuntimeError
        index = faiss.deserialize_index(np.frombuffer(path.read_bytes(), dtype=np.uint8))
    except RuntimeError as err:
        text = " ".join(str(err).split())
        short = re.search(r"read error in .*?: (\d+) != (\d+)", text)
        reason = (
            f"it ends early: {short[1]} of {short[2]} bytes read" if short
            else re.sub(r"^Error in .*? at \S+:\d+: ", "", text)  # faiss's C++ function and source line
        )  # fmt: skip
        raise ValueError(f"{path}: truncated or not a faiss index ({reason})") from None
    meta = _read_sidecar(Path(str(path) + ".json"))
    if index.ntotal != meta["k"] or index.d != meta["dim"]:
        raise ValueError(
            f"{path}: holds {index.ntotal} centroids of dimension {index.d}, but {path}.json says k={meta['k']}, "
            f"dim={meta['dim']} (files from different fits?)"
        )
    return index, meta


def _read_sidecar(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: missing (kmeans fit writes it next to the model; re-run it)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else str(path)
        why = f"{err.msg}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise ValueError(f"{where}: not valid JSON ({why})") from None
    missing = [key for key in ("k", "dim") if not isinstance(meta, dict) or not isinstance(meta.get(key), int)]
    if missing:
        raise ValueError(f"{path}: lacks the integer {' and '.join(map(repr, missing))} of the fit")
    return meta


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def assign_labels(
    model_path: str | Path,
    features: FeatureSet,
    manifest: Manifest,
    out: str | Path,
    *,
    rows: tuple[int, int] | None = None,
) -> Path:
    """Nearest centroid of every frame, one label line per manifest row (checked against the audio).

    An `out` ending in .km gets fairseq's headerless layout and dict.km.txt beside it.
    With `rows` = (first, last), only those rows: a part, itself a label file of that slice of the manifest
    (its header adds `first_row`), for `join_label_parts` to put together with the others.
    """
    index, meta = load_kmeans(model_path)
    features.check_manifest(manifest)
    if index.d != features.dim:
        raise ValueError(
            f"{model_path}: centroids have dimension {index.d}, features {features.folder} have {features.dim}"
        )
    first, last = (0, len(manifest)) if rows is None else rows
    if not 0 <= first <= last <= len(manifest):
        raise ValueError(f"rows [{first}, {last}) are not within the {len(manifest)} rows of the manifest")

    def labels():  # noqa: ANN202
        rows = itertools.islice(features, first, last)  # skipped rows are memory maps, never read
        for block in progress(rows, total=last - first, desc="assigning labels", unit="utt"):
            if len(block) == 0:
                yield np.zeros(0, np.int64)
                continue
            if not np.isfinite(block).all():
                raise ValueError(f"{features.folder}: NaN/Inf features")
            yield index.search(np.ascontiguousarray(block), 1)[1][:, 0]

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = {} if rows is None else {"first_row": first}
    framing = {key: getattr(features, key) for key in FRAMING_KEYS if getattr(features, key) is not None}
    if out.suffix == KM_SUFFIX and rows is not None:
        raise ValueError(f"{out}: parts (rows) need our header to be joined; write them as .labels")
    write_labels(
        out, manifest if rows is None else _slice(manifest, first, last), labels(), k=meta["k"],
        rate=features.frame_rate, source=features.source, layer=features.layer, kmeans=file_hash(model_path),
        headerless=out.suffix == KM_SUFFIX, **framing, **part,
    )  # fmt: skip
    return out


def _slice(manifest: Manifest, first: int, last: int) -> Manifest:
    return Manifest(root=manifest.root, paths=manifest.paths[first:last], num_samples=manifest.num_samples[first:last])


PART_KEYS = ("k", "rate", "source", "layer", "kmeans")  # what every part must agree on, in the joined header


def join_label_parts(parts: Sequence[str | Path], manifest: Manifest, out: str | Path) -> Path:
    """Join the parts of `assign_labels(rows=...)`, in row order, into the label file of the whole manifest:
    byte for byte the file one `assign_labels` call writes. Each part is checked to hold its rows."""
    parts = [Path(p) for p in parts]
    heads = [read_header(p) for p in parts]
    expected = 0
    for path, head in zip(parts, heads):
        missing = [key for key in (*PART_KEYS, "first_row", "rows", "manifest") if key not in head]
        if missing:
            raise ValueError(f"{path}:1: the header lacks {', '.join(map(repr, missing))} (not a label part?)")
        if head["first_row"] != expected:
            raise ValueError(f"{path}:1: the part starts at row {head['first_row']}, expected row {expected}")
        last = expected + head["rows"]
        if last > len(manifest) or head["manifest"] != manifest_hash(_slice(manifest, expected, last)):
            raise ValueError(f"{path}:1: labels of other rows than rows [{expected}, {last}) of the manifest")
        for key in (*PART_KEYS, *FRAMING_KEYS):
            if head.get(key) != heads[0].get(key):
                raise ValueError(f"{path}:1: {key}={head.get(key)!r}, but {parts[0]} has {heads[0].get(key)!r}")
        expected = last
    if expected != len(manifest) or not parts:
        raise ValueError(f"{out}: the parts hold {expected} rows, the manifest {len(manifest)}")

    def labels():  # noqa: ANN202
        for path in parts:
            with open(path, encoding="utf-8") as f:
                next(f)  # the header
                for number, line in enumerate(f, start=2):
                    try:
                        yield np.array(line.split(), dtype=np.int64)
                    except ValueError:
                        raise ValueError(f"{path}:{number}: not a line of integer labels") from None

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = heads[0]
    write_labels(out, manifest, labels(), **{key: head[key] for key in (*PART_KEYS, *FRAMING_KEYS) if key in head})
    return out
