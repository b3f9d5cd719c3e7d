"""Manifests: a tsv whose first line is a root folder, then `relative/path<TAB>num_samples` per row.

`num_samples` counts samples at 16 kHz, as `load_audio` returns them. Scanning reads headers only,
except where a header cannot vouch for the samples (float-coded files may hold NaN/Inf); with
`full_check` every file is decoded and validated like training would load it. Both decode in blocks
(`measure_audio`), so memory stays at one block however long a file is.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ssl_audio.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, check_not_empty_file, resampled_length
from ssl_audio.audio_formats import AUDIO_EXTENSIONS
from ssl_audio.audio_spans import check_stats, measure_audio
from ssl_audio.progress import progress

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
    if full_check:  # load_audio's verdicts and length, one block at a time
        stats = measure_audio(path)
        check_stats(path, stats)
        return stats.num_samples
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
        check_stats(path, measure_audio(path, resampled=False), raw=True)
    return num_samples


def find_audio(dirs: list[str | Path]) -> list[Path]:
    """Every audio file under `dirs`, recursively, sorted, each file once.

    Paths are lexical, under each folder of `dirs` resolved. Folder links are followed once: a folder already
    listed (same device and inode) is not entered again, so a link loop ends; real folders are listed before
    links to them. A file reached by several paths (links, overlapping `dirs`) appears once, by its path
    without a link where there is one.
    """
    seen_dirs: set[tuple[int, int]] = set()
    by_target: dict[str, Path] = {}
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a directory")
        for path in _walk_once(folder.resolve(), seen_dirs):
            target = os.path.realpath(path)
            best = by_target.get(target)
            if best is None or (path.is_symlink(), path) < (best.is_symlink(), best):
                by_target[target] = path
    return sorted(by_target.values())


def _walk_once(top: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[Path]:
    """Files with an audio extension under `top`; real folders first, then those reached through links."""
    real, linked = [top], []
    while real or linked:
        folder = real.pop() if real else linked.pop()
        try:
            info = folder.stat()
        except OSError:  # a link that dangles or loops on itself: nothing to list
            continue
        if (info.st_dev, info.st_ino) in seen_dirs:
            continue
        seen_dirs.add((info.st_dev, info.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable folder: skipped, as os.walk does
            continue
        for entry in entries:
            if _is_dir(entry):
                (linked if entry.is_symlink() else real).append(Path(entry.path))
            elif entry.name.lower().endswith(AUDIO_EXTENSIONS):
                yield Path(entry.path)  # dangling links too: inspection reports them unreadable


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


# Characters that end a line for str.splitlines, which load_manifest reads with, plus the field separator.
_BREAKS = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def unwritable_name(name: str) -> str | None:
    """Why `name` cannot be a manifest row that load_manifest reads back as written, or None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    bad = sorted({c for c in name if c in _BREAKS})
    if bad:
        return f"name holds {' '.join(repr(c) for c in bad)}, which the manifest format reserves"
    return None


def printable(text: str) -> str:
    """`text` as one line of valid UTF-8: undecodable bytes as \\xNN, TAB and line breaks escaped."""
    try:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from the file system
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c.encode("unicode_escape").decode("ascii") if c in _BREAKS else c for c in text)


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
    """Inspect every audio file under `dirs`; bad files and unwritable names are skipped with a reason."""
    files = find_audio(dirs)
    root = Path(os.path.commonpath([Path(d).resolve() for d in dirs]))
    skipped = []
    named = []
    for path in files:
        problem = unwritable_name(os.path.relpath(path, root))
        if problem is None:
            named.append(path)
        else:
            skipped.append((str(path), "unwritable_name", problem))

    def inspect(path: Path) -> tuple[Path, int | AudioError]:
        try:
            return path, inspect_file(path, full_check=full_check)
        except AudioError as err:
            return path, err

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # libsndfile releases the GIL
        results = list(progress(pool.map(inspect, named), total=len(named), desc="scanning audio", unit="file"))
    kept = []
    for path, result in results:
        if isinstance(result, AudioError):
            skipped.append((str(path), result.reason, result.detail))
        elif min_seconds is not None and result < min_seconds * SAMPLE_RATE:
            skipped.append((str(path), "shorter_than_min", f"{result / SAMPLE_RATE:.3f} s < {min_seconds} s"))
        elif max_seconds is not None and result > max_seconds * SAMPLE_RATE:
            skipped.append((str(path), "longer_than_max", f"{result / SAMPLE_RATE:.3f} s > {max_seconds} s"))
        else:
            kept.append((os.path.relpath(path, root), result))  # lexical: a link inside root stays inside
    return ScanResult(root=root, kept=kept, skipped=sorted(skipped))


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


def manifest_lines(root: Path, rows: list[tuple[str, int]]) -> list[str]:
    """The lines of a manifest; a root or row that load_manifest could not read back raises ValueError."""
    root_text = str(root)
    problem = unwritable_name(root_text) or (
        "name has leading or trailing spaces" if root_text.strip() != root_text else None
    )
    if problem:
        raise ValueError(f"root '{printable(root_text)}': cannot be a manifest's first line ({problem})")
    for rel, _ in rows:
        problem = unwritable_name(rel)
        if problem:
            raise ValueError(f"row '{printable(rel)}': cannot be written to a manifest ({problem})")
    return [f"{root_text}\n", *(f"{rel}\t{n}\n" for rel, n in rows)]


def skipped_lines(skipped: list[tuple[str, str, str]]) -> list[str]:
    """skipped.tsv: a header, then one escaped `path<TAB>reason<TAB>detail` line per file, any name allowed."""
    return ["path\treason\tdetail\n", *("\t".join(map(printable, row)) + "\n" for row in skipped)]


def replace_files(contents: dict[Path, list[str]]) -> None:
    """Write each file to a temp file beside it, then rename them all: a failed write leaves the old files."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, lines in contents.items():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temps.append((tmp, path))
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(lines)
        for tmp, path in temps:
            os.replace(tmp, path)  # atomic per file: a reader never sees half a manifest
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def write_manifest(path: str | Path, root: Path, rows: list[tuple[str, int]]) -> None:
    path = Path(path)
    replace_files({path: manifest_lines(root, rows)})


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
    """Scan `dirs` and write train.tsv, valid.tsv and skipped.tsv into `out`; returns a summary.

    The three files are renamed into place only once all are written, so a failure keeps the previous ones.
    """
    result = scan(dirs, min_seconds=min_seconds, max_seconds=max_seconds, workers=workers, full_check=full_check)
    if not result.kept:
        raise ValueError(f"no usable audio under {', '.join(map(str, dirs))} ({len(result.skipped)} files skipped)")
    train, valid = split_rows(result.kept, valid_fraction, seed)
    out = Path(out)
    contents = {
        out / "train.tsv": manifest_lines(result.root, train),
        out / "valid.tsv": manifest_lines(result.root, valid),
        out / "skipped.tsv": skipped_lines(result.skipped),
    }
    out.mkdir(parents=True, exist_ok=True)
    replace_files(contents)
    return {
        "root": str(result.root),
        "train_files": len(train),
        "valid_files": len(valid),
        "train_hours": sum(n for _, n in train) / SAMPLE_RATE / 3600,
        "valid_hours": sum(n for _, n in valid) / SAMPLE_RATE / 3600,
        "skipped": dict(Counter(reason for _, reason, _ in result.skipped)),
    }


def leaves_root(rel: str) -> bool:
    """Whether the row `rel`, joined to the root with `..` collapsed lexically, points outside the root.

    Lexical on purpose: a symlink that a user put inside the root pointing elsewhere is the user's choice and
    stays allowed (the scanner follows such links once and writes the path through the link).
    """
    return os.path.normpath(rel).split(os.sep)[0] == os.pardir


def load_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Read and check a manifest; an error names the manifest line that is wrong.

    A row must stay inside the root: absolute paths and rows whose `..` climb out of it are refused.
    """
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
        if leaves_root(rel):
            raise ValueError(f"{path}:{lineno}: path {rel!r} leaves the root {str(root)!r}")
        if check_files and not (root / rel).is_file():
            raise ValueError(f"{path}:{lineno}: {root / rel} does not exist")
        paths.append(rel)
        lengths.append(int(count))
    if not paths:
        raise ValueError(f"{path}: manifest has a root but no rows")
    return Manifest(root=root, paths=tuple(paths), num_samples=tuple(lengths))


SPLITS = ("train", "valid")  # the manifests `ssl-audio manifest` writes into its folder


def split_path(manifest_dir: str | Path, split: str) -> Path:
    """`split`'s manifest in a manifest folder: train.tsv or valid.tsv."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(manifest_dir) / f"{split}.tsv"


def load_split(manifest_dir: str | Path, split: str) -> Manifest:
    return load_manifest(split_path(manifest_dir, split))


def has_split(manifest_dir: str | Path, split: str) -> bool:
    """Whether the folder's `split` manifest exists and has lines past its root line.

    A corpus too small for a valid share has a valid.tsv of only its root (or none): it trains without validation.
    """
    path = split_path(manifest_dir, split)
    return path.exists() and len(path.read_text(encoding="utf-8").splitlines()) > 1
