"""Frame-label files (HuBERT's pseudo-labels): one line of space-separated integers per manifest row.

The first line is a JSON header after `#`: {"k": clusters, "rate": Hz, "source": ..., "manifest": sha256 of
the manifest's rows, ...}. Loading checks that the file belongs to the manifest and that every label
sequence covers its audio within a tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.dataset import FrameLabels
from ssl_audio.data.manifest import Manifest

LENGTH_TOLERANCE_SECONDS = 0.1  # labels and audio may differ by this much (fairseq HuBERT: 0.1 s)


def manifest_hash(manifest: Manifest) -> str:
    """Identity of a manifest's rows (paths and lengths), independent of where its root lives."""
    digest = hashlib.sha256()
    for path, n in zip(manifest.paths, manifest.num_samples):
        digest.update(f"{path}\t{n}\n".encode())
    return digest.hexdigest()[:16]


def check_label_length(num_labels: int, num_samples: int, rate: float, *, where: str) -> None:
    """Raise ValueError naming `where` unless the labels cover the audio within the tolerance."""
    expected = num_samples * rate / SAMPLE_RATE
    if abs(num_labels - expected) > LENGTH_TOLERANCE_SECONDS * rate:
        raise ValueError(
            f"{where}: {num_labels} labels at {rate:g} Hz cover {num_labels / rate:.3f} s, but the audio is "
            f"{num_samples / SAMPLE_RATE:.3f} s (tolerance {LENGTH_TOLERANCE_SECONDS} s)"
        )


def write_labels(
    path: str | Path, manifest: Manifest, labels: Iterable[np.ndarray], *, k: int, rate: float, **header: Any
) -> None:
    """Write one label line per manifest row (checked against the audio length), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    head = {"k": k, "rate": rate, "manifest": manifest_hash(manifest), "rows": len(manifest), **header}
    try:
        _write_rows(tmp, path, manifest, labels, head, k, rate)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a rejected write leaves nothing behind
        raise
    os.replace(tmp, path)


def _write_rows(
    tmp: Path, path: Path, manifest: Manifest, labels: Iterable[np.ndarray], head: dict, k: int, rate: float
) -> None:
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("#" + json.dumps(head) + "\n")
        for i, row in enumerate(labels):
            row = np.asarray(row)
            if i >= len(manifest):
                raise ValueError(f"{path}: more label rows than the {len(manifest)} manifest rows")
            check_label_length(
                len(row), manifest.num_samples[i], rate, where=f"{path}: row {i + 1} ({manifest.paths[i]})"
            )
            if row.size and (row.min() < 0 or row.max() >= k):
                raise ValueError(f"{path}: row {i + 1} ({manifest.paths[i]}) has labels outside [0, {k})")
            f.write(" ".join(map(str, row.tolist())) + "\n")
            count += 1
    if count != len(manifest):
        raise ValueError(f"{path}: {count} label rows for {len(manifest)} manifest rows")


def read_header(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise ValueError(f"{path}:1: not a text label file") from None
    if not first.startswith("#"):
        raise ValueError(f"{path}:1: missing the '#{{...}}' label header")
    try:
        header = json.loads(first[1:])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:1: label header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}:1: label header must be a JSON object")
    return header


def load_labels(path: str | Path, manifest: Manifest, *, name: str | None = None) -> FrameLabels:
    """Read a label file for `manifest`; errors name the file, the line and the utterance."""
    path = Path(path)
    header = read_header(path)
    for key in ("k", "rate", "manifest"):
        if key not in header:
            raise ValueError(f"{path}:1: label header lacks {key!r}")
    if header["manifest"] != manifest_hash(manifest):
        raise ValueError(f"{path}: labels were made for another manifest (hash {header['manifest']})")
    rate, k = float(header["rate"]), int(header["k"])
    rows: list[np.ndarray] = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for lineno, line in enumerate(f, start=2):
            i = lineno - 2
            if i >= len(manifest):
                raise ValueError(f"{path}:{lineno}: more label rows than the {len(manifest)} manifest rows")
            try:
                row = np.array(line.split(), dtype=np.int64)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: labels must be integers") from None
            where = f"{path}:{lineno} ({manifest.paths[i]})"
            check_label_length(len(row), manifest.num_samples[i], rate, where=where)
            if row.size and (row.min() < 0 or row.max() >= k):
                raise ValueError(f"{where}: labels outside [0, {k})")
            rows.append(row)
    if len(rows) != len(manifest):
        raise ValueError(f"{path}: {len(rows)} label rows for {len(manifest)} manifest rows")
    return FrameLabels(rate=rate, per_utterance=rows, name=name or path.stem)


def label_classes(paths: Sequence[str | Path]) -> tuple[int, ...]:
    """k of each label file, from the headers."""
    return tuple(int(read_header(p)["k"]) for p in paths)


# Header keys that must agree between the train and valid files of one label set: the number of classes, the
# label rate and the k-means model that assigned them (compared only where both headers carry it).
AGREEING_KEYS = ("k", "rate", "kmeans")


def check_label_sets(train: Sequence[str | Path], valid: Sequence[str | Path] = ()) -> None:
    """Refuse, before any training, label files that cannot belong to one run.

    `train[i]` and `valid[i]` are label set i for train.tsv and valid.tsv. Every header must carry k and rate;
    all label sets must share one rate (one frame grid); within a set, train and valid must agree on k, rate
    and the k-means hash. Errors name both files.
    """
    if valid and len(valid) != len(train):
        raise ValueError(
            f"data.valid_labels names {len(valid)} label files, data.train_labels {len(train)}: give one valid file "
            "per label set, in the same order"
        )
    headers = {}
    for path in (*train, *valid):
        header = read_header(path)
        for key in ("k", "rate"):
            if not isinstance(header.get(key), (int, float)) or isinstance(header.get(key), bool):
                raise ValueError(f"{path}:1: label header lacks a number {key!r}")
        headers[str(path)] = header
    first = train[0] if train else None
    for path in train[1:]:
        if float(headers[str(path)]["rate"]) != float(headers[str(first)]["rate"]):
            raise ValueError(
                f"{path}: labels at {headers[str(path)]['rate']:g} Hz, but {first} at {headers[str(first)]['rate']:g} "
                "Hz: all label sets of a run share one label rate"
            )
    for set_index, (train_path, valid_path) in enumerate(zip(train, valid)):
        ours, theirs = headers[str(train_path)], headers[str(valid_path)]
        for key in AGREEING_KEYS:
            if key in ours and key in theirs and _differ(ours[key], theirs[key]):
                raise ValueError(
                    f"{valid_path}: {key}={theirs[key]} but {train_path} has {key}={ours[key]} (label set "
                    f"{set_index}): valid labels must come from the k-means model of the train labels"
                )


def _differ(a: Any, b: Any) -> bool:
    """Header values that differ: numbers by value (50 == 50.0), anything else as written."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return float(a) != float(b) if numbers else a != b
