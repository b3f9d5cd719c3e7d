"""`ssl-audio <command>`: the command line. Each command parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _manifest(args: argparse.Namespace) -> None:
    from ssl_audio.data.manifest import build_manifests

    summary = build_manifests(
        args.dirs,
        args.out,
        valid_fraction=args.valid_fraction,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        seed=args.seed,
        workers=args.workers,
        full_check=args.full_check,
    )
    skipped = summary["skipped"]
    print(
        f"manifest: {summary['train_files']} train files ({summary['train_hours']:.2f} h), "
        f"{summary['valid_files']} valid files ({summary['valid_hours']:.2f} h) -> {args.out}/train.tsv, valid.tsv"
    )
    if skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
        print(f"skipped {sum(skipped.values())} files ({reasons}); see {args.out}/skipped.tsv")


def _data_pass(args: argparse.Namespace) -> None:
    from ssl_audio.config import load_config, save_config
    from ssl_audio.data.loader import make_loader
    from ssl_audio.data.manifest import load_manifest
    from ssl_audio.data.throughput import loader_pass

    cfg = load_config(args.recipe, args.overrides)
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")
    data = cfg.data
    manifest = load_manifest(Path(data.manifest_dir) / "train.tsv")
    loader = make_loader(
        manifest,
        max_samples=data.max_samples,
        random_crop=True,
        max_batch_seconds=data.max_batch_seconds,
        bucketing=data.bucketing,
        num_buckets=data.num_buckets,
        collate_mode=data.collate,
        seed=cfg.seed,
        num_workers=data.num_workers,
        target_lufs=data.target_lufs,
    )
    stats = loader_pass(loader, max_batches=args.max_batches, progress=True)
    print(f"data pass: {stats.line()}")
    summary = {"throughput_audio_s_per_s": stats.throughput, "padding_fraction": stats.padding_fraction}
    (Path(cfg.run_dir) / "data_pass.json").write_text(json.dumps(summary, indent=2) + "\n")


def _pretrain(args: argparse.Namespace) -> None:
    from ssl_audio.config import load_config
    from ssl_audio.train.loop import train

    cfg = load_config(args.recipe, args.overrides)
    result = train(cfg, resume=args.resume)
    summary = f"pretrain: {result.step} updates ({result.skipped} skipped)"
    if result.losses:
        summary += f", loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} per predicted frame this run"
    if result.valid:
        summary += f", valid loss {result.valid['loss']:.3f}"
    print(summary + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-audio", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("manifest", help="scan audio folders into train.tsv / valid.tsv manifests")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders scanned recursively for wav, flac, ogg")
    p.add_argument("--out", required=True, help="folder for train.tsv, valid.tsv and skipped.tsv")
    p.add_argument("--valid-fraction", type=float, default=0.01, help="share of files held out (default 0.01)")
    p.add_argument("--min-seconds", type=float, default=None, help="skip files shorter than this")
    p.add_argument("--max-seconds", type=float, default=None, help="skip files longer than this")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    p.add_argument("--workers", type=int, default=4, help="parallel header readers")
    p.add_argument(
        "--full-check", action="store_true", help="decode every file (catches silence and NaN in any coding)"
    )
    p.set_defaults(func=_manifest)

    p = commands.add_parser("data-pass", help="one timed pass over a recipe's training batches")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.max_samples=32000")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.set_defaults(func=_data_pass)

    p = commands.add_parser(
        "pretrain",
        help="pretrain wav2vec2, HuBERT or WavLM from a recipe",
        description="Many processes: accelerate launch -m ssl_audio.cli pretrain RECIPE.yaml ...",
    )
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")
    p.add_argument(
        "--resume", default=None, metavar="auto|STEP_DIR",
        help="auto: newest complete checkpoint in run_dir (broken ones skipped); or a step folder",
    )  # fmt: skip
    p.set_defaults(func=_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:  # bad input: a clear message, not a traceback
        print(f"ssl-audio {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
