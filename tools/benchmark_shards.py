"""Sharded input against the file loader: audio-seconds per second read, and read + decoded, on the same data.

    python tools/benchmark_shards.py [MANIFEST] [--shard-seconds 300] [--workers 0] [--repeats 3] [--threads 1]

Without MANIFEST, a corpus of --files FLAC files (1 to 15 s) is made in a temp folder. The manifest is packed
into shards there too. Each setup runs --repeats rounds, taking turns, and reports its fastest (a shared
machine slows some rounds several-fold). The page cache is warmed for both first, so this measures the
per-file overhead the CPU pays (open, stat, small reads, decoding), not a cold disk or a cluster file
system's metadata server: the opens and stats each setup issues are listed beside it for that.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.loader import make_file_loader
from ssl_audio.data.manifest import build_manifests, load_manifest
from ssl_audio.data.shard_dataset import make_shard_loader
from ssl_audio.data.shards import load_shard_index, pack_shards
from ssl_audio.data.throughput import loader_pass


def make_corpus(folder: Path, files: int, seed: int) -> Path:
    """`files` FLAC files of 1 to 15 s of shaped noise (FLAC codes it at about speech's bit rate), and train.tsv."""
    rng = np.random.default_rng(seed)
    audio = folder / "audio"
    for i in range(files):
        n = int(rng.uniform(1, 15) * SAMPLE_RATE)
        envelope = 0.05 + 0.25 * np.abs(np.sin(np.arange(n) / 2000))
        wave = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * envelope  # low-passed
        path = audio / f"spk{i % 20:02d}" / f"utt{i:05d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    build_manifests([audio], folder / "manifest", valid_fraction=0.0)
    return folder / "manifest" / "train.tsv"


def read_files(tsv: Path) -> float:
    """Every file opened and read whole, as the file loader does, after load_manifest's stat of each."""
    manifest = load_manifest(tsv)
    for i in range(len(manifest)):
        manifest.audio_path(i).read_bytes()
    return manifest.seconds


def read_shards(folder: Path) -> float:
    """Every member of every shard read, in order, from one open per shard."""
    index = load_shard_index(folder)
    for shard in range(len(index.shards)):
        with tarfile.open(index.shard_path(shard), mode="r:") as tar:
            for info in tar:
                tar.extractfile(info).read()
    return index.seconds


def timed(run: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    seconds = run()
    return seconds, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", nargs="?", default=None, help="manifest tsv (default: a generated corpus)")
    parser.add_argument("--files", type=int, default=200, help="files of the generated corpus")
    parser.add_argument("--shard-seconds", type=float, default=300.0, help="audio per shard")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of both loaders")
    parser.add_argument("--max-batch-seconds", type=float, default=80.0, help="padded audio per batch")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setup; the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (more only add noise on shared cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="benchmark_shards_") as tmp:
        tmp = Path(tmp)
        tsv = Path(args.manifest) if args.manifest else make_corpus(tmp, args.files, args.seed)
        manifest = load_manifest(tsv)
        seconds, pack_wall = timed(lambda: pack_shards(tsv, tmp / "shards", shard_seconds=args.shard_seconds).seconds)
        index = load_shard_index(tmp / "shards")
        rows, shards = len(manifest), len(index.shards)
        mib = sum(s.size for s in index.shards) / 2**20
        print(
            f"{tsv}: {rows} files, {seconds / 3600:.2f} h; packed into {shards} shards ({mib:.0f} MiB) in "
            f"{pack_wall:.1f} s; {args.workers} workers"
        )
        read_files(tsv), read_shards(tmp / "shards")  # warm the page cache for both, untimed
        common = dict(max_samples=None, random_crop=False, max_batch_seconds=args.max_batch_seconds, seed=args.seed)
        file_loader = make_file_loader(manifest, **common, num_workers=args.workers)
        shard_loader = make_shard_loader(tmp / "shards", **common, num_workers=args.workers)
        setups: dict[str, tuple[str, Callable[[], float]]] = {
            "read, files": (f"{rows} stat + {rows} open", lambda: read_files(tsv)),
            "read, shards": (f"{shards} open", lambda: read_shards(tmp / "shards")),
            "read + decode, file loader": (
                f"{rows} stat + {rows} open",
                lambda: loader_pass(file_loader).audio_seconds,
            ),
            "read + decode, shard loader": (f"{shards} open", lambda: loader_pass(shard_loader).audio_seconds),
        }
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for name, (_, run) in setups.items():
                audio, wall = timed(run)
                if name not in best or wall < best[name][1]:
                    best[name] = (audio, wall)
    print("| setup | file-system calls per epoch | audio h | wall s | audio-s/s |")
    print("|---|---|---|---|---|")
    for name, (calls, _) in setups.items():
        audio, wall = best[name]
        print(f"| {name} | {calls} | {audio / 3600:.3f} | {wall:.2f} | {audio / wall:,.0f} |")
    for kind in ("read", "read + decode"):
        files = best[f"{kind}, files" if kind == "read" else f"{kind}, file loader"]
        sharded = best[f"{kind}, shards" if kind == "read" else f"{kind}, shard loader"]
        print(f"{kind}: shards / files throughput {files[1] / sharded[1] * sharded[0] / files[0]:.2f}x")


if __name__ == "__main__":
    main()
