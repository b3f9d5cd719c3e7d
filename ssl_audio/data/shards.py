"""Tar shards of a manifest, for cluster file systems: one open and one sequential read per shard.

`pack_shards` writes DIR/shard-000000.tar, ... and DIR/index.json. Each manifest row i becomes two tar
members: `{i:06d}.json` ({"row", "path", "num_samples", "labels": {set name: [...]}}) and then
`{i:06d}{ext}`, the file's encoded bytes as they are (decoded only when read). index.json lists, per shard,
its byte size, its rows and their lengths, plus the manifest's hash and the label sets: a reader plans
every epoch from it alone, without a stat() or open() per utterance.

All shards are written to temp files, then renamed into place; the index is removed before the first
rename and written (atomically) after the last, so a folder has a complete index or none, and a packing
that fails (bad input, a file unreadable since the manifest was built) leaves the earlier one untouched.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_audio.atomic import write_text
from ssl_audio.audio import MIN_SAMPLES, SAMPLE_RATE
from ssl_audio.data.dataset import FrameLabels
from ssl_audio.data.labels import load_labels, manifest_hash, read_header
from ssl_audio.data.manifest import Manifest, load_manifest

INDEX_NAME = "index.json"
INDEX_FORMAT = "ssl_audio.shards/1"


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def member_stem(row: int) -> str:
    return f"{row:06d}"


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    name: str  # file name inside the shard folder
    size: int  # bytes: a shard of another size is truncated or from another packing
    rows: tuple[int, ...]  # manifest rows, in the order of the members
    num_samples: tuple[int, ...]  # samples at 16 kHz of each row


@dataclass(frozen=True, kw_only=True)
class LabelSetInfo:
    name: str
    rate: float  # Hz
    k: int


@dataclass(frozen=True, kw_only=True)
class ShardIndex:
    """What index.json says: enough to plan batches without touching a shard."""

    folder: Path
    manifest: str  # the manifest the shards were packed from (informative)
    manifest_hash: str  # labels.manifest_hash of its rows
    shards: tuple[ShardInfo, ...]
    labels: tuple[LabelSetInfo, ...] = ()

    @property
    def path(self) -> Path:
        return self.folder / INDEX_NAME

    @property
    def num_rows(self) -> int:
        return sum(len(shard.rows) for shard in self.shards)

    @property
    def seconds(self) -> float:
        return sum(sum(shard.num_samples) for shard in self.shards) / SAMPLE_RATE

    def shard_path(self, shard: int) -> Path:
        return self.folder / self.shards[shard].name

    def lengths(self) -> list[int]:
        """Samples of every row, by row."""
        lengths = [0] * self.num_rows
        for shard in self.shards:
            for row, n in zip(shard.rows, shard.num_samples):
                lengths[row] = n
        return lengths

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "manifest": self.manifest,
            "manifest_hash": self.manifest_hash,
            "rows": self.num_rows,
            "seconds": self.seconds,
            "labels": [{"name": s.name, "rate": s.rate, "k": s.k} for s in self.labels],
            "shards": [
                {"name": s.name, "bytes": s.size, "rows": list(s.rows), "num_samples": list(s.num_samples)}
                for s in self.shards
            ],
        }


def split_into_shards(num_samples: Sequence[int], shard_seconds: float) -> list[range]:
    """Consecutive rows cut into ceil(total / shard_seconds) shards of nearly equal audio.

    Equal shards, not full ones plus a remainder: ranks and workers each stream whole shards, and the
    batch counts are evened out between them, which a small last shard would make costly.
    """
    total = sum(num_samples)
    count = min(len(num_samples), max(1, math.ceil(total / (shard_seconds * SAMPLE_RATE))))
    shard_of, before = [], 0
    for n in num_samples:  # a row goes to the shard where its middle falls
        shard_of.append(min(count - 1, int((before + n / 2) * count // total)))
        before += n
    bounds = [i for i in range(1, len(shard_of)) if shard_of[i] != shard_of[i - 1]]
    return [range(a, b) for a, b in zip([0, *bounds], [*bounds, len(shard_of)])]


def _label_sets(paths: Sequence[str | Path], manifest: Manifest) -> list[tuple[FrameLabels, int]]:
    sets = []
    for path in paths:
        labels = load_labels(path, manifest)  # checks the manifest hash and every row's length
        sets.append((labels, int(read_header(path)["k"])))
    names = [labels.name for labels, _ in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"label files {', '.join(map(str, paths))}: two share the name (file stem) of a label set")
    return sets


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # no time or owner: the same input packs the same bytes
    tar.addfile(info, io.BytesIO(data))


def _write_shard(
    tmp: Path, manifest_path: Path, manifest: Manifest, rows: range, label_sets: list[tuple[FrameLabels, int]]
) -> int:
    """Write one shard to `tmp`; returns its size in bytes."""
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for row in rows:
            source = manifest.audio_path(row)
            try:
                data = source.read_bytes()
            except OSError as err:
                raise ValueError(f"{manifest_path}:{row + 2}: {source}: cannot read ({err.strerror})") from None
            meta = {
                "row": row,
                "path": manifest.paths[row],
                "num_samples": manifest.num_samples[row],
                "labels": {ls.name: [int(v) for v in ls.per_utterance[row]] for ls, _ in label_sets},
            }
            _add_member(tar, f"{member_stem(row)}.json", json.dumps(meta).encode())
            _add_member(tar, member_stem(row) + Path(source.name).suffix.lower(), data)
    return tmp.stat().st_size


def pack_shards(
    manifest_path: str | Path,
    out: str | Path,
    *,
    shard_seconds: float = 3600.0,
    labels: Sequence[str | Path] = (),
) -> ShardIndex:
    """Pack `manifest_path` (and its label files, rows as the manifest's) into tar shards under `out`.

    Every shard is written to a temp file first; only when all are written are they renamed into place, so a
    failure (a file unreadable since the manifest was built, a full disk) leaves an earlier packing as it was.
    """
    if not (isinstance(shard_seconds, (int, float)) and math.isfinite(shard_seconds) and shard_seconds > 0):
        raise ValueError(f"--shard-seconds must be finite and > 0, got {shard_seconds}")
    manifest = load_manifest(manifest_path)
    label_sets = _label_sets(labels, manifest)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards, temps = [], []
    try:
        for number, rows in enumerate(split_into_shards(manifest.num_samples, shard_seconds)):
            name = shard_name(number)
            temps.append(out / f".{name}.{os.getpid()}.tmp")
            size = _write_shard(temps[-1], Path(manifest_path), manifest, rows, label_sets)
            lengths = tuple(manifest.num_samples[row] for row in rows)
            shards.append(ShardInfo(name=name, size=size, rows=tuple(rows), num_samples=lengths))
        old = _old_shard_names(out)
        (out / INDEX_NAME).unlink(missing_ok=True)  # between the renames and the new index, the folder has none
        for tmp, shard in zip(temps, shards):
            os.replace(tmp, out / shard.name)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    index = ShardIndex(
        folder=out,
        manifest=str(Path(manifest_path).resolve()),
        manifest_hash=manifest_hash(manifest),
        shards=tuple(shards),
        labels=tuple(LabelSetInfo(name=ls.name, rate=ls.rate, k=k) for ls, k in label_sets),
    )
    write_text(index.path, json.dumps(index.to_json()) + "\n")
    for name in old - {shard.name for shard in shards}:  # an earlier, larger packing's tail
        (out / name).unlink(missing_ok=True)
    return index


def _old_shard_names(out: Path) -> set[str]:
    """Shards a previous index in `out` listed (any that a new packing does not rewrite are removed)."""
    try:
        return {str(s["name"]) for s in json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


# -- reading the index --------------------------------------------------------------------------------------


def _field(path: Path, obj: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    where = f"{where}{key}"
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{path}: key {where!r} is missing")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{path}: key {where!r} has the wrong type ({type(value).__name__})")
    return value


def load_shard_index(folder: str | Path) -> ShardIndex:
    """Read and check DIR/index.json; an error names the file and the key that is wrong."""
    folder = Path(folder)
    path = folder / INDEX_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(
            f"{path}: cannot read shard index ({err.strerror}); pack with `ssl-audio pack-shards`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: shard index is not JSON ({err})") from None
    if _field(path, raw, "format", str) != INDEX_FORMAT:
        raise ValueError(f"{path}: key 'format' is {raw['format']!r}, expected {INDEX_FORMAT!r}")
    shards = []
    for i, entry in enumerate(_field(path, raw, "shards", list)):
        where = f"shards[{i}]."
        name = _field(path, entry, "name", str, where)
        if Path(name).name != name or not name:
            raise ValueError(f"{path}: key '{where}name' must be a file name, got {name!r}")
        rows = _field(path, entry, "rows", list, where)
        lengths = _field(path, entry, "num_samples", list, where)
        if len(rows) != len(lengths) or not rows:
            raise ValueError(f"{path}: shards[{i}] has {len(rows)} rows and {len(lengths)} lengths (need equal, > 0)")
        if not all(isinstance(v, int) and v >= 0 for v in rows):
            raise ValueError(f"{path}: key '{where}rows' must hold non-negative integers")
        if not all(isinstance(v, int) and v >= MIN_SAMPLES for v in lengths):
            raise ValueError(f"{path}: key '{where}num_samples' must hold integers >= {MIN_SAMPLES}")
        size = _field(path, entry, "bytes", int, where)
        shards.append(ShardInfo(name=name, size=size, rows=tuple(rows), num_samples=tuple(lengths)))
    if not shards:
        raise ValueError(f"{path}: key 'shards' lists no shard")
    rows = sorted(row for shard in shards for row in shard.rows)
    if rows != list(range(len(rows))):
        raise ValueError(f"{path}: the shards' rows must be 0..{len(rows) - 1}, each once")
    label_sets = []
    for i, entry in enumerate(_field(path, raw, "labels", list)):
        where = f"labels[{i}]."
        rate = float(_field(path, entry, "rate", (int, float), where))
        info = LabelSetInfo(
            name=_field(path, entry, "name", str, where), rate=rate, k=_field(path, entry, "k", int, where)
        )
        FrameLabels(rate=info.rate, per_utterance=(), name=info.name)  # the rate must give whole label frames
        label_sets.append(info)
    return ShardIndex(
        folder=folder,
        manifest=_field(path, raw, "manifest", str),
        manifest_hash=_field(path, raw, "manifest_hash", str),
        shards=tuple(shards),
        labels=tuple(label_sets),
    )
