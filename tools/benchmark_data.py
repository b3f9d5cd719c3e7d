"""Data-loader benchmark: throughput and padding, with and without length bucketing.

    python tools/benchmark_data.py MANIFEST [--max-batch-seconds 80] [--max-samples 250000] [--workers N] [--epochs 1]

Throughput is audio-seconds loaded per wall-second; the padding fraction is padded samples over all
samples in the batches (B * S summed), the share of model compute spent on zeros. The two setups take
turns for --repeats rounds and each reports its fastest round: on a shared machine, other processes
slow some rounds several-fold, and the first round also pays worker start-up.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields

from torch.utils.data import DataLoader

from ssl_audio.data.loader import make_loader, set_epoch
from ssl_audio.data.manifest import Manifest, load_manifest
from ssl_audio.data.throughput import PassStats, loader_pass


def build(manifest: Manifest, args: argparse.Namespace, *, bucketing: bool) -> DataLoader:
    return make_loader(
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="manifest tsv (first line root, then path<TAB>num_samples)")
    parser.add_argument("--max-batch-seconds", type=float, default=80.0, help="bound on B * S per batch, seconds")
    parser.add_argument("--max-samples", type=int, default=250_000, help="crop length in samples (wav2vec 2.0: 250k)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num-buckets", type=int, default=0, help="0: exact length sort; k: k shuffled buckets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setup; the fastest is reported")
    parser.add_argument("--no-warm-cache", action="store_true", help="skip the untimed read of every file")
    args = parser.parse_args(argv)

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
