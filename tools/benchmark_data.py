"""Data-loader benchmark: throughput and padding, with and without length bucketing; or crop cost by file length.

    python tools/benchmark_data.py MANIFEST [--max-batch-seconds 80] [--max-samples 250000] [--workers N] [--epochs 1]
    python tools/benchmark_data.py --crop-scaling [--lengths 10,600,3600,10800] [--rates 16000,44100] [--crops 50]

Throughput is audio-seconds loaded per wall-second; the padding fraction is padded samples over all
samples in the batches (B * S summed), the share of model compute spent on zeros. The two setups take
turns for --repeats rounds and each reports its fastest round: on a shared machine, other processes
slow some rounds several-fold, and the first round also pays worker start-up.

--crop-scaling writes noise files of each length and rate into a temp folder (removed afterwards) and, each
in a fresh process (so peak RSS is that setting's own), times random 2 s crops through AudioDataset (a ranged
read) against whole-file reading (`load_audio`, then the same slice: the dataset before ranged reads), and the
manifest full check (blocked) against decoding the whole file. Whole-file rows are skipped for files longer
than --whole-max-seconds; the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import soundfile as sf
from torch.utils.data import DataLoader

from ssl_audio.audio import SAMPLE_RATE, load_audio, resampled_length
from ssl_audio.data.dataset import AudioDataset, crop_offset
from ssl_audio.data.loader import make_file_loader, set_epoch
from ssl_audio.data.manifest import Manifest, inspect_file, load_manifest
from ssl_audio.data.throughput import PassStats, loader_pass


def build(manifest: Manifest, args: argparse.Namespace, *, bucketing: bool) -> DataLoader:
    return make_file_loader(
        manifest,
        max_samples=args.max_samples,
        random_crop=True,
        max_batch_seconds=args.max_batch_seconds,
        bucketing=bucketing,
        num_buckets=args.num_buckets,
        seed=args.seed,
        num_workers=args.workers,
    )


def timed_epochs(loader: DataLoader, epochs: int) -> PassStats:
    passes = []
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        passes.append(loader_pass(loader))
    return PassStats(**{f.name: sum(getattr(p, f.name) for p in passes) for f in fields(PassStats)})


def warm_page_cache(manifest: Manifest) -> None:
    """Read every file once, untimed, so neither run pays the cold disk reads the other one skips."""
    start = time.perf_counter()
    size = sum(len(manifest.audio_path(i).read_bytes()) for i in range(len(manifest)))
    print(f"page cache: read {len(manifest)} files, {size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s")


CROP_SAMPLES = 2 * SAMPLE_RATE  # a 2 s crop
WRITE_FRAMES = 1 << 22  # noise is written in pieces: a 3 h file never sits in memory


def write_noise(path: Path, seconds: float, rate: int) -> None:
    rng = np.random.default_rng(0)
    frames = round(seconds * rate)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, frames, WRITE_FRAMES):
            f.write((0.1 * rng.standard_normal(min(WRITE_FRAMES, frames - start))).astype(np.float32))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def crop_worker(path: Path, method: str, repeats: int) -> dict:
    """One setting, in its own process: ms per crop (or per check) and this process's peak RSS."""
    info = sf.info(str(path))
    total = resampled_length(info.frames, info.samplerate)
    before = peak_rss_mib()
    start = time.perf_counter()
    if method in ("ranged", "whole"):
        manifest = Manifest(root=path.parent, paths=(path.name,), num_samples=(total,))
        dataset = AudioDataset(manifest, max_samples=CROP_SAMPLES, random_crop=True)
        for epoch in range(repeats):
            if method == "ranged":
                dataset.set_epoch(epoch)
                wave = dataset[0].wave
            else:
                offset = crop_offset(total - CROP_SAMPLES, seed=0, epoch=epoch, index=0)
                wave = load_audio(path)[offset : offset + CROP_SAMPLES].clone()
            assert wave.shape == (CROP_SAMPLES,)
    else:
        for _ in range(repeats):
            if method == "full-check":
                assert inspect_file(path, full_check=True) == total
            else:
                assert load_audio(path).shape[0] == total
    ms = (time.perf_counter() - start) * 1000 / repeats
    return {"ms": ms, "peak_rss_mib": peak_rss_mib(), "start_rss_mib": before}


def run_worker(path: Path, method: str, repeats: int) -> dict:
    command = [sys.executable, __file__, "--crop-worker", str(path), "--method", method, "--crops", str(repeats)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def crop_scaling(args: argparse.Namespace) -> None:
    lengths = [float(x) for x in args.lengths.split(",")]
    rates = [int(x) for x in args.rates.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="crop_scaling_", dir=args.dir))
    print(f"files in {folder}; {args.crops} ranged crops, {args.whole_crops} whole-file crops per setting, 2 s each")
    print(f"{'file':>15} | {'ranged ms/crop':>14} {'+RSS MiB':>8} | {'whole ms/crop':>13} {'+RSS MiB':>8} | "
          f"{'full check s':>12} {'+RSS MiB':>8} | {'whole decode s':>14} {'+RSS MiB':>8}")  # fmt: skip
    try:
        for rate in rates:
            for seconds in lengths:
                path = folder / f"noise_{rate}_{seconds:g}s.wav"
                write_noise(path, seconds, rate)
                whole = seconds <= args.whole_max_seconds
                ranged = run_worker(path, "ranged", args.crops)
                cells = [_cell(ranged, 1.0, 14)]
                cells.append(
                    _cell(run_worker(path, "whole", args.whole_crops), 1.0, 13) if whole else f"{'skipped':>22}"
                )
                cells.append(_cell(run_worker(path, "full-check", 1), 1e-3, 12))
                cells.append(_cell(run_worker(path, "decode", 1), 1e-3, 14) if whole else f"{'skipped':>23}")
                print(f"{_duration(seconds):>7} {rate / 1000:>4g}kHz | " + " | ".join(cells), flush=True)
                path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"+RSS: each process's peak RSS (ru_maxrss) above its RSS before any audio (about "
        f"{ranged['start_rss_mib']:.0f} MiB: imports). 'skipped': whole-file reads of files over "
        f"{args.whole_max_seconds:g} s (--whole-max-seconds). Whole decode: load_audio of the whole file, what "
        "the full check did before blocks."
    )


def _cell(result: dict, scale: float, width: int) -> str:
    """Time, and the peak RSS above what the process held before touching audio (imports: about 0.5 GiB)."""
    grown = result["peak_rss_mib"] - result["start_rss_mib"]
    return f"{result['ms'] * scale:{width}.{1 if scale == 1 else 2}f} {grown:8.0f}"


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", nargs="?", help="manifest tsv (first line root, then path<TAB>num_samples)")
    parser.add_argument(
        "--crop-scaling", action="store_true", help="crop cost and peak RSS by file length (no manifest)"
    )
    parser.add_argument("--lengths", default="10,600,3600,10800", help="--crop-scaling: file lengths, seconds")
    parser.add_argument("--rates", default="16000,44100", help="--crop-scaling: sample rates of the files, Hz")
    parser.add_argument("--crops", type=int, default=50, help="--crop-scaling: ranged crops per file")
    parser.add_argument("--whole-crops", type=int, default=3, help="--crop-scaling: whole-file crops per file")
    parser.add_argument("--whole-max-seconds", type=float, default=3600, help="--crop-scaling: longest whole-file read")
    parser.add_argument("--dir", default=None, help="--crop-scaling: where the temp folder goes (default: TMPDIR)")
    parser.add_argument("--crop-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--max-batch-seconds", type=float, default=80.0, help="bound on B * S per batch, seconds")
    parser.add_argument("--max-samples", type=int, default=250_000, help="crop length in samples (wav2vec 2.0: 250k)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num-buckets", type=int, default=0, help="0: exact length sort; k: k shuffled buckets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setup; the fastest is reported")
    parser.add_argument("--no-warm-cache", action="store_true", help="skip the untimed read of every file")
    args = parser.parse_args(argv)
    if args.crop_worker is not None:
        print(json.dumps(crop_worker(args.crop_worker, args.method, args.crops)))
        return
    if args.crop_scaling:
        crop_scaling(args)
        return
    if args.manifest is None:
        parser.error("give a MANIFEST, or --crop-scaling")

    manifest = load_manifest(args.manifest)
    print(f"{args.manifest}: {len(manifest)} files, {manifest.seconds / 3600:.2f} h; {args.workers} workers")
    if not args.no_warm_cache:
        warm_page_cache(manifest)
    loaders = {bucketing: build(manifest, args, bucketing=bucketing) for bucketing in (True, False)}
    best: dict[bool, PassStats] = {}
    for _ in range(args.repeats):
        for bucketing, loader in loaders.items():
            stats = timed_epochs(loader, args.epochs)
            if bucketing not in best or stats.wall_seconds < best[bucketing].wall_seconds:
                best[bucketing] = stats
    bucketed, shuffled = best[True], best[False]
    print(f"bucketing:    {bucketed.line()}")
    print(f"no bucketing: {shuffled.line()}")
    print(
        f"bucketing / no bucketing: throughput {bucketed.throughput / shuffled.throughput:.2f}x, "
        f"padding fraction {bucketed.padding_fraction / max(shuffled.padding_fraction, 1e-9):.3f}x, "
        f"batch samples (model compute) {bucketed.batch_seconds / shuffled.batch_seconds:.2f}x, "
        f"batches {bucketed.batches / shuffled.batches:.2f}x"
    )


if __name__ == "__main__":
    main()
