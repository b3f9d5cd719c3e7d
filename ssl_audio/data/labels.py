"""Frame-label files (HuBERT's pseudo-labels): one line of space-separated integers per manifest row.

The first line is a JSON header after `#`: {"k": clusters, "rate": Hz, "source": ..., "manifest": sha256 of
the manifest's rows, "window": samples, "offset": samples, ...}; `window` and `offset` are how the label frames
framed the audio (frame j covers [offset + j * hop, offset + j * hop + window), nn/frontend.py), absent from files
written before they were recorded. Loading checks that the file belongs to the manifest and that every label
sequence covers its audio within a tolerance.

fairseq's HuBERT `.km` files are the same rows without the header. For them the rate comes from the caller
(`data.label_rate`), k from fairseq's `dict.km.txt` beside the file (one line per class) or, lacking it, from
the largest label + 1; lengths are checked as for ours, the manifest hash cannot be (there is none).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_audio.atomic import write_text
from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.dataset import FrameLabels
from ssl_audio.data.manifest import Manifest

LENGTH_TOLERANCE_SECONDS = 0.1  # labels and audio may differ by this much (fairseq HuBERT: 0.1 s)
FRAMING_KEYS = ("window", "offset")  # optional header keys: the label frames' window and offset in samples


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
    path: str | Path,
    manifest: Manifest,
    labels: Iterable[np.ndarray],
    *,
    k: int,
    rate: float,
    headerless: bool = False,
    **header: Any,
) -> None:
    """Write one label line per manifest row (checked against the audio length), atomically.

    `headerless`: fairseq's `.km` layout, rows only, and its `dict.<suffix>.txt` of the k classes beside it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    head = (
        None
        if headerless
        else {"k": k, "rate": rate, "manifest": manifest_hash(manifest), "rows": len(manifest), **header}
    )
    try:
        _write_rows(tmp, path, manifest, labels, head, k, rate)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a rejected write leaves nothing behind
        raise
    os.replace(tmp, path)
    if headerless:
        write_text(fairseq_dict(path), "".join(f"{c} 1\n" for c in range(k)))


def fairseq_dict(path: str | Path) -> Path:
    """fairseq's class list for label file `path`: dict.km.txt beside train.km (the task reads dict.{label}.txt)."""
    path = Path(path)
    return path.with_name(f"dict.{path.suffix.lstrip('.') or path.name}.txt")


def _write_rows(
    tmp: Path, path: Path, manifest: Manifest, labels: Iterable[np.ndarray], head: dict | None, k: int, rate: float
) -> None:
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        if head is not None:
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


def has_header(path: str | Path) -> bool:
    """Whether `path` starts with our '#{...}' header (else: a headerless fairseq .km file)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(1) == "#"
    except UnicodeDecodeError:
        raise ValueError(f"{path}:1: not a text label file") from None


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


def label_info(path: str | Path, rate: float | None = None) -> dict[str, Any]:
    """The header of either layout: ours as written (`rate`, when given, must agree with it); for a headerless
    .km file {"k", "rate": `rate`} (required), k from fairseq's dict file or the largest label + 1."""
    if has_header(path):
        header = read_header(path)
        if rate is not None and "rate" in header and float(header["rate"]) != float(rate):
            raise ValueError(f"{path}:1: labels at {header['rate']:g} Hz, but data.label_rate is {rate:g}")
        return header
    if rate is None:
        raise ValueError(
            f"{path}:1: missing the '#{{...}}' label header; for a headerless fairseq .km file set data.label_rate "
            "(its rate in Hz)"
        )
    return {"k": _headerless_classes(Path(path)), "rate": float(rate)}


def _headerless_classes(path: Path) -> int:
    classes = fairseq_dict(path)
    if classes.is_file():
        return sum(1 for line in classes.read_text(encoding="utf-8").splitlines() if line.strip())
    largest = -1
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            row = _parse_row(line, path, lineno)
            if row.size:
                largest = max(largest, int(row.max()))
    return largest + 1


def _parse_row(line: str, path: Path, lineno: int) -> np.ndarray:
    try:
        return np.array(line.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: labels must be integers") from None


def load_labels(
    path: str | Path, manifest: Manifest, *, name: str | None = None, rate: float | None = None
) -> FrameLabels:
    """Read a label file for `manifest`; errors name the file, the line and the utterance.

    `rate` (Hz): needed for a headerless fairseq .km file; with our header it must agree or be None."""
    path = Path(path)
    headed = has_header(path)
    header = label_info(path, rate)
    for key in ("k", "rate", "manifest") if headed else ():
        if key not in header:
            raise ValueError(f"{path}:1: label header lacks {key!r}")
    if headed and header["manifest"] != manifest_hash(manifest):
        raise ValueError(f"{path}: labels were made for another manifest (hash {header['manifest']})")
    rate, k = float(header["rate"]), int(header["k"])
    rows: list[np.ndarray] = []
    first = 2 if headed else 1
    with open(path, encoding="utf-8") as f:
        if headed:
            next(f)
        for lineno, line in enumerate(f, start=first):
            i = lineno - first
            if i >= len(manifest):
                raise ValueError(f"{path}:{lineno}: more label rows than the {len(manifest)} manifest rows")
            row = _parse_row(line, path, lineno)
            where = f"{path}:{lineno} ({manifest.paths[i]})"
            check_label_length(len(row), manifest.num_samples[i], rate, where=where)
            if row.size and (row.min() < 0 or row.max() >= k):
                raise ValueError(f"{where}: labels outside [0, {k})")
            rows.append(row)
    if len(rows) != len(manifest):
        raise ValueError(f"{path}: {len(rows)} label rows for {len(manifest)} manifest rows")
    framing = {key: _framing_value(header, key, path) for key in FRAMING_KEYS}
    return FrameLabels(rate=rate, per_utterance=rows, name=name or path.stem, **framing)


def _framing_value(header: dict[str, Any], key: str, path: str | Path) -> int | None:
    """The header's integer `window` or `offset`, None where it does not say."""
    value = header.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or (key == "window" and value < 1)):
        raise ValueError(f"{path}:1: label header {key!r} must be a {'positive ' if key == 'window' else ''}integer")
    return value


def label_framing(path: str | Path, rate: float | None = None) -> tuple[int | None, int | None]:
    """(window, offset) of a label file's frames from its header; (None, None) where it does not say."""
    header = label_info(path, rate)
    window, offset = (_framing_value(header, key, path) for key in FRAMING_KEYS)
    return window, offset


def label_classes(paths: Sequence[str | Path], rate: float | None = None) -> tuple[int, ...]:
    """k of each label file, from the headers (`label_info` for headerless files)."""
    return tuple(int(label_info(p, rate)["k"]) for p in paths)


# Header keys that must agree between the train and valid files of one label set: the number of classes, the
# label rate, the k-means model that assigned them and the frames' window and offset (compared only where both
# headers carry it).
AGREEING_KEYS = ("k", "rate", "kmeans", *FRAMING_KEYS)


def check_label_sets(train: Sequence[str | Path], valid: Sequence[str | Path] = (), rate: float | None = None) -> None:
    """Refuse, before any training, label files that cannot belong to one run.

    `train[i]` and `valid[i]` are label set i for train.tsv and valid.tsv. Every header must carry k and rate;
    all label sets must share one rate (one frame grid); within a set, train and valid must agree on k, rate
    and the k-means hash. Errors name both files. `rate`: data.label_rate, for headerless .km files.
    """
    if valid and len(valid) != len(train):
        raise ValueError(
            f"data.valid_labels names {len(valid)} label files, data.train_labels {len(train)}: give one valid file "
            "per label set, in the same order"
        )
    headers = {}
    for path in (*train, *valid):
        header = label_info(path, rate)
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
    for key in FRAMING_KEYS:  # one frame grid: the sets that say their framing must say the same
        said = [(path, headers[str(path)][key]) for path in train if headers[str(path)].get(key) is not None]
        for path, value in said[1:]:
            if value != said[0][1]:
                raise ValueError(
                    f"{path}: label frames with {key} {value}, but {said[0][0]} {said[0][1]}: all label sets of a "
                    "run share one frame grid"
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
