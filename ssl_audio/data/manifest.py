"""Manifests: a tsv whose first line is a root folder, then `relative/path<TAB>num_samples` per row.

`num_samples` counts samples at 16 kHz, as `load_audio` returns them. Scanning reads headers only,
except where a header cannot vouch for the samples (float-coded files may hold NaN/Inf); with
`full_check` every file is decoded and validated like training would load it.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ssl_audio.audio import (
    AUDIO_EXTENSIONS,
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    check_not_empty_file,
    check_samples,
    load_audio,
    read_audio,
    resampled_length,
)

FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only codings that can store NaN/Inf


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Audio files under `root` with their lengths in samples at 16 kHz."""

    root: Path
    paths: tuple[str, ...]
    num_samples: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def audio_path(self, index: int) -> Path:
        return self.root / self.paths[index]

    @property
    def seconds(self) -> float:
        return sum(self.num_samples) / SAMPLE_RATE


def inspect_file(path: str | Path, *, full_check: bool = False) -> int:
    """Number of samples `path` yields at 16 kHz; raises AudioError when it is not usable audio."""
    if full_check:
        return int(load_audio(path).shape[-1])
    check_not_empty_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(path, "unreadable", str(err).strip()) from None
    if info.frames <= 0:
        raise AudioError(path, "empty", "no samples")
    num_samples = resampled_length(info.frames, info.samplerate)
    if num_samples < MIN_SAMPLES:
        raise AudioError(path, "too_short", f"{num_samples} samples at 16 kHz, fewer than {MIN_SAMPLES}")
    if info.subtype in FLOAT_SUBTYPES:
        data, _ = read_audio(path)
        check_samples(path, data.T)
    return num_samples


def find_audio(dirs: list[str | Path]) -> list[Path]:
    """Every audio file under `dirs`, recursively, sorted (symlinks followed)."""
    found = []
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a directory")
        for dirpath, _, names in os.walk(folder, followlinks=True):
            found.extend(Path(dirpath, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS))
    return sorted(set(found))


@dataclass(frozen=True, kw_only=True)
class ScanResult:
    root: Path
    kept: list[tuple[str, int]]  # (path relative to root, samples at 16 kHz)
    skipped: list[tuple[str, str, str]]  # (path, reason, detail)


def scan(
    dirs: list[str | Path],
    *,
    min_seconds: float | None = None,
    max_seconds: float | None = None,
    workers: int = 1,
    full_check: bool = False,
) -> ScanResult:
    """Inspect every audio file under `dirs`; bad files are skipped with a reason, never raised."""
    files = find_audio(dirs)
    root = Path(os.path.commonpath([Path(d).resolve() for d in dirs]))

    def inspect(path: Path) -> tuple[Path, int | AudioError]:
        try:
            return path, inspect_file(path, full_check=full_check)
        except AudioError as err:
            return path, err

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # libsndfile releases the GIL
        results = list(pool.map(inspect, files))
    kept, skipped = [], []
    for path, result in results:
        if isinstance(result, AudioError):
            skipped.append((str(path), result.reason, result.detail))
        elif min_seconds is not None and result < min_seconds * SAMPLE_RATE:
            skipped.append((str(path), "shorter_than_min", f"{result / SAMPLE_RATE:.3f} s < {min_seconds} s"))
        elif max_seconds is not None and result > max_seconds * SAMPLE_RATE:
            skipped.append((str(path), "longer_than_max", f"{result / SAMPLE_RATE:.3f} s > {max_seconds} s"))
        else:
            kept.append((os.path.relpath(path.resolve(), root), result))
    return ScanResult(root=root, kept=kept, skipped=skipped)


def split_rows(
    rows: list[tuple[str, int]], valid_fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Deterministic train/valid split by seed; each part keeps the input order."""
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    num_valid = round(len(rows) * valid_fraction)
    if valid_fraction > 0 and len(rows) > 1:
        num_valid = max(num_valid, 1)
    chosen = set(random.Random(seed).sample(range(len(rows)), num_valid))
    train = [row for i, row in enumerate(rows) if i not in chosen]
    valid = [row for i, row in enumerate(rows) if i in chosen]
    return train, valid


def write_manifest(path: str | Path, root: Path, rows: list[tuple[str, int]]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{root}\n")
        f.writelines(f"{rel}\t{n}\n" for rel, n in rows)
    os.replace(tmp, path)  # atomic: a reader never sees half a manifest


def build_manifests(
    dirs: list[str | Path],
    out: str | Path,
    *,
    valid_fraction: float = 0.01,
    min_seconds: float | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
    workers: int = 1,
    full_check: bool = False,
) -> dict:
    """Scan `dirs` and write train.tsv, valid.tsv and skipped.tsv into `out`; returns a summary."""
    result = scan(dirs, min_seconds=min_seconds, max_seconds=max_seconds, workers=workers, full_check=full_check)
    if not result.kept:
        raise ValueError(f"no usable audio under {', '.join(map(str, dirs))} ({len(result.skipped)} files skipped)")
    train, valid = split_rows(result.kept, valid_fraction, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "train.tsv", result.root, train)
    write_manifest(out / "valid.tsv", result.root, valid)
    with open(out / "skipped.tsv", "w", encoding="utf-8") as f:
        f.write("path\treason\tdetail\n")
        f.writelines(f"{p}\t{r}\t{d}\n" for p, r, d in result.skipped)
    return {
        "root": str(result.root),
        "train_files": len(train),
        "valid_files": len(valid),
        "train_hours": sum(n for _, n in train) / SAMPLE_RATE / 3600,
        "valid_hours": sum(n for _, n in valid) / SAMPLE_RATE / 3600,
        "skipped": dict(Counter(reason for _, reason, _ in result.skipped)),
    }


def load_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Read and check a manifest; an error names the manifest line that is wrong."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"{path}: cannot read manifest ({err.strerror})") from None
    if not lines:
        raise ValueError(f"{path}:1: empty manifest, expected a root folder on the first line")
    root = Path(lines[0].strip())
    if not root.is_dir():
        raise ValueError(f"{path}:1: root {str(root)!r} is not a directory")
    paths, lengths = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'path<TAB>num_samples', got {len(fields)} fields")
        rel, count = fields
        if not count.strip().isdigit() or int(count) < MIN_SAMPLES:
            raise ValueError(f"{path}:{lineno}: num_samples must be an integer >= {MIN_SAMPLES}, got {count!r}")
        if os.path.isabs(rel):
            raise ValueError(f"{path}:{lineno}: path {rel!r} must be relative to the root")
        if check_files and not (root / rel).is_file():
            raise ValueError(f"{path}:{lineno}: {root / rel} does not exist")
        paths.append(rel)
        lengths.append(int(count))
    if not paths:
        raise ValueError(f"{path}: manifest has a root but no rows")
    return Manifest(root=root, paths=tuple(paths), num_samples=tuple(lengths))
