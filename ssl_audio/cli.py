"""`ssl-audio <command>`: the command line. Each command parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ssl_audio.probe.config import ProbeConfig

from ssl_audio.atomic import write_text
from ssl_audio.progress import configure_logging
from ssl_audio.train.run_control import REQUEUE_EXIT_CODE, TrainingError  # light: no torch


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


def _pack_shards(args: argparse.Namespace) -> None:
    from ssl_audio.data.shards import pack_shards

    index = pack_shards(args.manifest, args.out, shard_seconds=args.shard_seconds, labels=args.labels)
    sets = f", label sets {', '.join(s.name for s in index.labels)}" if index.labels else ""
    print(
        f"pack-shards: {index.num_rows} rows ({index.seconds / 3600:.2f} h) in {len(index.shards)} shards of about "
        f"{index.seconds / len(index.shards):.0f} s{sets} -> {index.path}"
    )


def _data_pass(args: argparse.Namespace) -> None:
    from ssl_audio.configs import save_config
    from ssl_audio.data.manifest import load_split
    from ssl_audio.data.pipeline import make_loader
    from ssl_audio.data.throughput import loader_pass
    from ssl_audio.train.config import load_config

    cfg = load_config(args.recipe, args.overrides)
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")
    data = cfg.data
    loader = make_loader(load_split(data.manifest_dir, "train"), data, split="train", seed=cfg.seed)
    stats = loader_pass(loader, max_batches=args.max_batches, progress=True)
    print(f"data pass: {stats.line()}")
    summary = {"throughput_audio_s_per_s": stats.throughput, "padding_fraction": stats.padding_fraction}
    write_text(Path(cfg.run_dir) / "data_pass.json", json.dumps(summary, indent=2) + "\n")


def _pretrain(args: argparse.Namespace) -> int:
    from ssl_audio.train.config import load_config

    return _run_training(load_config(args.recipe, args.overrides), args, "pretrain")


def _finetune(args: argparse.Namespace) -> int:
    from ssl_audio.finetune.targets import write_split_manifests
    from ssl_audio.train.config import load_config

    cfg = load_config(args.recipe, args.overrides)
    if cfg.model.family != "finetune" or cfg.finetune.train is None:
        raise ValueError(f"{args.recipe}: fine-tuning needs model.family: finetune and finetune.train (a targets tsv)")
    if cfg.finetune.write_manifests and not args.print_config:
        for path in write_split_manifests(cfg.finetune, cfg.data.manifest_dir):
            print(f"finetune: wrote {path} from the targets' audio files")
    return _run_training(cfg, args, "finetune")


def _run_training(cfg, args: argparse.Namespace, name: str) -> int:  # noqa: ANN001 (a run Config)
    import yaml

    from ssl_audio.configs import to_dict
    from ssl_audio.models.registry import family_config
    from ssl_audio.train.config import resolve_config
    from ssl_audio.train.loop import train

    if args.print_config:
        cfg = resolve_config(cfg)  # what training would write to run_dir/config.yaml
        family_config(cfg.model)  # a bad model.config key fails here as it would in training
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    result = train(cfg, resume=args.resume)
    summary = f"{name}: {result.step} updates ({result.skipped} skipped)"
    if result.losses:
        summary += f", loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} per predicted frame this run"
    if result.valid:
        summary += f", valid loss {result.valid['loss']:.3f}"
        for key in ("cer", "wer", "accuracy", "macro_f1"):
            if key in result.valid:
                summary += f", {key} {result.valid[key]:.4f}"
    print(summary + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""))
    if result.losses:
        mfu = "" if result.mfu is None else f", MFU {result.mfu:.1%}"
        print(
            f"throughput: {result.audio_seconds_per_second:.1f} audio-s/s, "
            f"{result.tflops_per_second:.3g} TFLOP/s{mfu} over {len(result.losses)} updates"
        )
    if result.interrupted is not None:
        print(f"{name}: stopped by {result.interrupted}; continue with --resume auto", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    return 0


def _use_finetuned(args: argparse.Namespace) -> None:
    from ssl_audio.finetune.infer import run_files

    for path, text in run_files(args.step_dir, args.files, task=args.command, beam=getattr(args, "beam", 1)):
        print(f"{path}\t{text}")


def _dump_features(args: argparse.Namespace) -> None:
    from ssl_audio.cluster.features import FeatureSource, dump_features, shard_from_environment
    from ssl_audio.data.manifest import load_manifest

    shard, num_shards = args.shard, args.num_shards
    if shard is None or num_shards is None:  # a flag given wins over the launcher's environment
        from_env = shard_from_environment(os.environ)
        shard = from_env[0] if shard is None else shard
        num_shards = from_env[1] if num_shards is None else num_shards
    manifest = load_manifest(args.manifest)
    source = FeatureSource(name=args.source, layer=args.layer, dtype=args.dtype)
    meta = dump_features(
        manifest, source, args.out, shard=shard, num_shards=num_shards, device=args.device, progress=True
    )
    print(f"dump-features: wrote {meta} ({args.source}{'' if args.layer is None else f', layer {args.layer}'})")


def _kmeans(args: argparse.Namespace) -> None:
    from ssl_audio.cluster.features import FeatureSet
    from ssl_audio.cluster.kmeans import assign_labels, fit_kmeans, sample_frames, save_kmeans
    from ssl_audio.data.manifest import load_manifest

    if args.action == "fit":
        features = FeatureSet(args.features)
        if args.max_points is None and args.sample_fraction is None:
            args.max_points = 250_000
        points = sample_frames(features, max_points=args.max_points, fraction=args.sample_fraction, seed=args.seed)
        result = fit_kmeans(
            points, args.k, iterations=args.iterations, restarts=args.restarts, seed=args.seed, threads=args.threads
        )
        save_kmeans(args.out, result, features)
        print(
            f"kmeans fit: k={args.k} on {len(points)} of {features.num_frames} frames, inertia {result.inertia:.5g} "
            f"({result.inertia / len(points):.4g} per frame), {result.empty} empty and {result.tiny} tiny clusters "
            f"-> {args.out}"
        )
    elif args.action == "assign":
        out = assign_labels(args.model, FeatureSet(args.features), load_manifest(args.manifest), args.out)
        print(f"kmeans assign: labels -> {out}")
    else:
        from ssl_audio.cluster.quality import quality_against_alignments
        from ssl_audio.data.labels import load_labels

        manifest = load_manifest(args.manifest)
        labels = load_labels(args.labels, manifest, rate=args.label_rate)
        quality = quality_against_alignments(
            labels.per_utterance,
            manifest.paths,
            str(manifest.root),
            args.alignments,
            labels.rate,
            window=labels.window,
            offset=labels.offset,
        )
        print(f"kmeans quality: {quality.line()}")


def _hubert_iterate(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from ssl_audio.cluster.iterate import IterateConfig, run_iterations
    from ssl_audio.configs import load_config

    cfg = load_config(args.recipe, args.overrides, schema=IterateConfig)
    summaries = run_iterations(cfg)
    if not PartialState().is_main_process:  # one table, from process 0 (run_iterations joined the processes)
        return
    print("| iteration | source | k | PNMI | phone purity | cluster purity | valid loss |")
    print("|---|---|---|---|---|---|---|")
    for s in summaries:
        source = "MFCC" if s["source"] == "mfcc" else f"layer {s['layer']}"
        quality = [f"{s[k]:.3f}" if k in s else "-" for k in ("pnmi", "phone_purity", "cluster_purity")]
        loss = f"{s['valid']['loss']:.3f}" if s.get("valid") else "-"
        print(f"| {s['iteration']} | {source} | {s['k']} | {' | '.join(quality)} | {loss} |")


def _probe_config(args: argparse.Namespace) -> ProbeConfig:
    """ProbeConfig from the options it has a field for; an option left out (None) takes the config's default."""
    from ssl_audio.configs import from_dict
    from ssl_audio.probe.config import ProbeConfig

    names = {f.name for f in dataclasses.fields(ProbeConfig)}
    given = {name: value for name, value in vars(args).items() if name in names and value is not None}
    return from_dict(given, schema=ProbeConfig)


def _probe(args: argparse.Namespace) -> None:
    cfg = _probe_config(args)  # range errors before a checkpoint is loaded or any audio encoded
    import torch

    from ssl_audio.probe.driver import run_probe
    from ssl_audio.probe.featurizer import make_featurizer
    from ssl_audio.probe.report import results_markdown, write_results

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    featurizer = make_featurizer(
        checkpoint=args.checkpoint, baseline=args.baseline, seed=cfg.seed, device=device, dtype=args.dtype
    )
    source = args.baseline or "checkpoint"
    out = Path(args.out) if args.out else Path("probes") / f"{cfg.task}-{source}"
    cache = Path(args.cache) if args.cache else out / "cache"
    results = run_probe(cfg, featurizer, cache_dir=cache, device=device, progress=True)
    written = write_results(out, results)
    print(results_markdown(results), end="")
    print(f"probe: wrote {', '.join(str(path) for path in written)}")


def _probe_report(args: argparse.Namespace) -> None:
    from ssl_audio.probe.report import compare_runs

    print(compare_runs(args.runs), end="")


def _probe_layers(args: argparse.Namespace) -> None:
    from ssl_audio.probe.report import layer_figure

    print(f"probe-layers: wrote {layer_figure(args.runs, args.out, metric=args.metric)}")


def _convert(args: argparse.Namespace) -> None:
    from ssl_audio.interop.convert import convert

    result = convert(
        args.src,
        args.dst,
        source=args.source,
        target=args.target,
        builder=args.builder,
        trust_pickle=args.trust_pickle,
        dictionary=args.dictionary,
    )
    print(f"convert: wrote {result.path}")
    for label, items in (("initialised fresh", result.fresh), ("not carried over", result.dropped)):
        if items:
            print(f"{label}: {', '.join(items[:12])}" + (f", ... ({len(items)} in all)" if len(items) > 12 else ""))
    for note in result.notes:
        print(f"note: {note}")


class _CommandParser(argparse.ArgumentParser):
    """A command's parser. With `intermixed`, options may come between and after KEY=VALUE overrides
    (`pretrain R.yaml --resume auto optim.lr=1e-4`): plain argparse fills a nargs='*' positional only from
    the words before the first option and calls the later ones unrecognized."""

    intermixed = False
    _parsing = False  # Python 3.11's intermixed parse calls parse_known_args itself, twice

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.intermixed or self._parsing:
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def _package_version() -> str:
    try:
        return importlib.metadata.version("ssl_audio")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never pip-installed
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-audio",
        description="Self-supervised audio pretraining (wav2vec 2.0, HuBERT, WavLM): data, training, clustering, "
        "probing, conversion. `ssl-audio COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"ssl-audio {_package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)

    p = commands.add_parser("manifest", help="scan audio folders into train.tsv / valid.tsv manifests")
    from ssl_audio.audio_formats import AUDIO_EXTENSIONS  # no torch: keeps --help fast

    kinds = ", ".join(ext.lstrip(".") for ext in AUDIO_EXTENSIONS)
    p.add_argument("dirs", nargs="+", metavar="DIR", help=f"folders scanned recursively (links once) for {kinds}")
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

    p = commands.add_parser(
        "pack-shards",
        help="pack a manifest (and its label files) into tar shards for cluster file systems",
        description="Writes OUT/shard-000000.tar, ... (each row's encoded audio and a JSON record) and OUT/index.json "
        "last. Streams shard by shard: give at least ranks x loader workers shards.",
    )
    p.add_argument("manifest", metavar="MANIFEST_TSV", help="a manifest tsv (train.tsv)")
    p.add_argument("--out", required=True, help="shard folder")
    p.add_argument(
        "--shard-seconds", type=float, default=3600.0, help="audio per shard; shards come out equal (default 3600)"
    )
    p.add_argument(
        "--labels", nargs="+", default=(), metavar="LABELS", help="label files of the manifest's rows, packed with them"
    )
    p.set_defaults(func=_pack_shards)

    p = commands.add_parser("data-pass", help="one timed pass over a recipe's training batches")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument(
        "overrides", nargs="*", default=(), metavar="KEY=VALUE", help="dotted overrides, e.g. data.max_samples=32000"
    )
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.intermixed = True
    p.set_defaults(func=_data_pass)

    p = commands.add_parser(
        "pretrain",
        help="pretrain wav2vec2, HuBERT or WavLM from a recipe",
        description="Many processes: accelerate launch -m ssl_audio.cli pretrain RECIPE.yaml ...",
    )
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", default=(), metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")
    p.add_argument(
        "--resume", default=None, metavar="auto|STEP_DIR",
        help="auto: newest complete checkpoint in run_dir (broken ones skipped); or a step folder",
    )  # fmt: skip
    p.add_argument(
        "--print-config", action="store_true",
        help="print the resolved config (as run_dir/config.yaml would hold it) and exit: nothing is trained or written",
    )  # fmt: skip
    p.intermixed = True
    p.set_defaults(func=_pretrain)

    p = commands.add_parser(
        "finetune",
        help="fine-tune a checkpoint with a CTC, seq2seq or classification head from a recipe",
        description="Same loop as pretrain (exact resume, atomic checkpoints, many GPUs via accelerate launch). "
        "Writes data.manifest_dir/{train,valid}.tsv from finetune.train / finetune.valid when absent.",
    )
    p.add_argument("recipe", help="YAML recipe (recipes/finetune_*.yaml)")
    p.add_argument("overrides", nargs="*", default=(), metavar="KEY=VALUE", help="dotted overrides")
    p.add_argument("--resume", default=None, metavar="auto|STEP_DIR", help="as for pretrain")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.intermixed = True
    p.set_defaults(func=_finetune)

    for name, what in (("transcribe", "print the transcript (CTC or seq2seq head)"), ("classify", "print the class")):
        p = commands.add_parser(name, help=f"{what} of audio files with a fine-tuned step folder")
        p.add_argument("step_dir", metavar="STEP_DIR", help="a step folder of `ssl-audio finetune`")
        p.add_argument("files", nargs="+", metavar="AUDIO", help="audio files of any length (chunked over 30 s)")
        if name == "transcribe":
            p.add_argument(
                "--beam",
                type=int,
                default=1,
                metavar="N",
                help="beam width: 1 greedy (default); CTC prefix beam, or seq2seq attention beam with joint CTC "
                "scoring at the model's decode.ctc_weight",
            )
        p.set_defaults(func=_use_finetuned)

    p = commands.add_parser("dump-features", help="MFCC or layer-L features of a manifest, for k-means (sharded)")
    p.add_argument("--manifest", required=True, help="a manifest tsv (train.tsv)")
    p.add_argument("--source", required=True, metavar="mfcc|CHECKPOINT", help="mfcc, or a checkpoint step folder")
    p.add_argument("--layer", type=int, default=None, help="encoder layer of a checkpoint source (0 = its input)")
    p.add_argument("--out", required=True, help="feature folder (one file pair per shard)")
    p.add_argument(
        "--shard", type=int, default=None,
        help="this process's shard (default: $RANK, else the Slurm array task's index, else 0)",
    )  # fmt: skip
    p.add_argument(
        "--num-shards", type=int, default=None,
        help="shards the manifest is split into (default: $WORLD_SIZE, else $SLURM_ARRAY_TASK_COUNT, else 1)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch device for checkpoint features")
    p.add_argument(
        "--dtype", default="fp32", choices=("fp32", "bf16"),
        help="checkpoint inference precision: bf16 = bfloat16 autocast (faster with bf16 units; ~1e-2 relative)",
    )  # fmt: skip
    p.set_defaults(func=_dump_features)

    p = commands.add_parser("kmeans", help="fit faiss k-means, assign labels, measure cluster quality")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    fit = actions.add_parser("fit", help="fit k-means on sampled frames of a feature dump")
    fit.add_argument("--features", required=True, help="feature folder from dump-features")
    fit.add_argument("--k", type=int, required=True, help="number of clusters")
    sample = fit.add_mutually_exclusive_group()
    sample.add_argument("--sample-fraction", type=float, default=None, help="keep each frame with this probability")
    sample.add_argument("--max-points", type=int, default=None, help="reservoir sample of this many frames")
    fit.add_argument("--iterations", type=int, default=50, help="k-means iterations")
    fit.add_argument("--restarts", type=int, default=1, help="runs from different seeds; the best is kept")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads")
    fit.add_argument("--out", required=True, help="model file, e.g. km.faiss")
    fit.set_defaults(func=_kmeans)
    assign = actions.add_parser("assign", help="label every frame with its nearest centroid")
    assign.add_argument("--model", required=True, help="km.faiss from kmeans fit")
    assign.add_argument("--features", required=True, help="feature folder of the manifest")
    assign.add_argument("--manifest", required=True, help="the manifest the features were dumped from")
    assign.add_argument(
        "--out", required=True, help="label file, one line per manifest row; a .km name: fairseq's headerless layout"
    )
    assign.set_defaults(func=_kmeans)
    quality = actions.add_parser("quality", help="phone purity, cluster purity and PNMI against alignments")
    quality.add_argument("--labels", required=True)
    quality.add_argument("--manifest", required=True)
    quality.add_argument("--alignments", required=True, help="alignments.jsonl of the demo corpus")
    quality.add_argument("--label-rate", type=float, help="Hz, for a headerless fairseq .km file")
    quality.set_defaults(func=_kmeans)

    p = commands.add_parser(
        "hubert-iterate",
        help="HuBERT's rounds: features, k-means, labels, pretraining",
        description="Many processes: accelerate launch -m ssl_audio.cli hubert-iterate RECIPE.yaml (or torchrun): "
        "all dump features, label and train; process 0 fits k-means.",
    )
    p.add_argument("recipe", help="YAML with run_dir, pretrain (a recipe) and iterations")
    p.add_argument("overrides", nargs="*", default=(), metavar="KEY=VALUE")
    p.intermixed = True
    p.set_defaults(func=_hubert_iterate)

    p = commands.add_parser(
        "probe",
        help="linear-probe a frozen checkpoint or a baseline on a downstream task",
        description="classify: utterance labels; verify: speaker EER/minDCF/Recall@K; ctc: characters (CER/WER); "
        "frames: phones per frame (--alignments); noisy: clean vs noisy clips (snr_db column; accuracy, AUC). "
        "Features are cached, so re-runs do not re-run the encoder.",
    )
    from ssl_audio.probe.config import ProbeConfig  # no torch either
    from ssl_audio.probe.registry import task_names

    default = {f.name: f.default for f in dataclasses.fields(ProbeConfig)}  # one source for the defaults
    p.add_argument("task", choices=task_names())
    p.add_argument("--checkpoint", default=None, metavar="STEP_DIR", help="a checkpoint step folder (any family)")
    p.add_argument(
        "--baseline", default=None, choices=("random", "mfcc", "logmel"),
        help="random: --checkpoint's architecture with fresh weights (seeded by --seed); mfcc: 39-d; logmel: 80-d",
    )  # fmt: skip
    p.add_argument("--train", required=True, help="tsv with a header row; `path` relative to the tsv's folder")
    p.add_argument("--test", required=True, help="tsv with the same columns")
    layers = p.add_mutually_exclusive_group()
    layers.add_argument("--layer", type=int, default=None, help="probe this layer (0 = transformer input)")
    layers.add_argument("--weighted", action="store_true", help="learn a softmax-weighted sum of all layers")
    p.add_argument("--all-layers", action="store_true", help="also probe every layer alone: table and layers.png")
    p.add_argument(
        "--head", default=default["head"], choices=("linear", "stats"),
        help="classify/verify/noisy: linear on per-layer pooled stats, or stats: mean+std pooling of the frames "
        "mixed over the layers (SUPERB SID/ASV style; learns layer weights unless --layer)",
    )  # fmt: skip
    p.add_argument(
        "--by-snr", action="store_true",
        help="also score each SNR bucket (clean, 20, 10, 5, 0 dB) of the test table's snr_db column",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="folder for results.json/.md (default probes/TASK-SOURCE)")
    p.add_argument("--cache", default=None, help="feature cache folder, shareable between runs (default OUT/cache)")
    p.add_argument("--label-column", default=None, help="default: classify the last column, verify speaker, ...")
    p.add_argument("--alignments", default=None, help="frames: alignments.jsonl of the corpus")
    p.add_argument("--epochs", type=int, default=None, help="head training epochs (default per task)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate of the head (default per task)")
    p.add_argument("--batch-size", type=int, default=default["batch_size"], help="utterances per update")
    p.add_argument("--seed", type=int, default=default["seed"])
    p.add_argument(
        "--seeds", type=int, default=default["seeds"],
        help="train the head N times (--seed, --seed + 1, ...): mean, std, each",
    )  # fmt: skip
    p.add_argument("--p-target", type=float, default=default["p_target"], help="verify: minDCF target prior")
    p.add_argument("--c-miss", type=float, default=default["c_miss"], help="verify: minDCF cost of a miss")
    p.add_argument("--c-fa", type=float, default=default["c_fa"], help="verify: minDCF cost of a false alarm")
    p.add_argument("--max-trials", type=int, default=None, help="verify: balanced subset of trial pairs")
    p.add_argument(
        "--trials", default=None, metavar="FILE",
        help="verify: trial list, `label enroll test` per line (VoxCeleb), paths as in --test's path column",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype", default="fp32", choices=("fp32", "bf16"),
        help="encoder inference precision: bf16 = bfloat16 autocast (faster with bf16 units; ~1e-2 relative)",
    )  # fmt: skip
    p.set_defaults(func=_probe)

    p = commands.add_parser("probe-report", help="several probe runs' results side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or their results.json)")
    p.set_defaults(func=_probe_report)

    p = commands.add_parser("probe-layers", help="several --all-layers runs' metric against the layer in one PNG")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or their results.json) with per-layer results")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--metric", default=None, help="default: the first run's headline metric (accuracy, eer, ...)")
    p.set_defaults(func=_probe_layers)

    p = commands.add_parser(
        "convert",
        help="import fairseq / transformers / torchaudio checkpoints; export ours to transformers",
        description="SRC: a fairseq .pt, a transformers folder, a torchaudio state dict .pt (with --builder) or "
        "one of our step folders. --to ssl_audio writes DST/step_00000000; --to hf makes DST a transformers folder. "
        "Fine-tuned CTC models (fairseq wav2vec_ctc, transformers *ForCTC) come in with their head and vocabulary; "
        "ours (family finetune, head ctc) go out as *ForCTC with vocab.json and tokenizer.",
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        choices=("fairseq", "hf", "torchaudio", "ssl_audio"),
        help="format of SRC (default: fairseq for a file, hf for a folder with config.json, ...)",
    )
    p.add_argument("--to", dest="target", default="ssl_audio", choices=("ssl_audio", "hf"))
    p.add_argument("--builder", default=None, help="torchaudio: the builder of the state dict, e.g. wavlm_base")
    p.add_argument(
        "--dict",
        dest="dictionary",
        default=None,
        metavar="DICT",
        help="fine-tuned fairseq CTC checkpoint: its dict.ltr.txt (default: dict.ltr.txt next to SRC)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="unpickle without the allow-list (can run code: only for files you trust)",
    )
    p.set_defaults(func=_convert)
    return parser


def error_line(err: BaseException) -> str | None:
    """The one-line message of an error caused by bad input; None for anything else (a bug keeps its traceback)."""
    if isinstance(err, ValueError):
        text = str(err)
    elif isinstance(err, OSError) and err.filename is not None:  # a named file that cannot be read or written
        names = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
        text = f"{names}: {err.strerror or type(err).__name__}"
    else:
        return None
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


# torch's intra-op threads for one command (faiss k-means keeps its own, so its labels do not change). On cores
# that other processes keep busy, every op's second thread waits for a core: a tiny HuBERT training step took
# 140 ms with 1 thread and 3.2 s with 2 (2 cores, load average 5.8). tools/quickstart.sh sets 1 on a busy machine.
TORCH_THREADS_VARIABLE = "SSL_AUDIO_TORCH_THREADS"


def set_torch_threads(environ: dict[str, str] | os._Environ) -> int | None:
    """Apply $SSL_AUDIO_TORCH_THREADS when set; returns the count applied (None: torch's default)."""
    value = environ.get(TORCH_THREADS_VARIABLE, "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{TORCH_THREADS_VARIABLE}={value!r}: expected a thread count >= 1")
    import torch  # only commands that run torch get here with the variable set

    torch.set_num_threads(int(value))
    return int(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()  # library code logs (ssl_audio.*); bars and log lines go to stderr
    try:
        set_torch_threads(os.environ)
        code = args.func(args)
    except TrainingError as err:  # the run cannot go on; its message says why and which checkpoint to use
        print(f"ssl-audio {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # bad input: a clear message, not a traceback
        line = error_line(err)
        if line is None:
            raise
        print(f"ssl-audio {args.command}: error: {line}", file=sys.stderr)
        return 2
    close_process_group()
    return code or 0


def close_process_group() -> None:
    """Destroy a process group the command left (accelerate / torchrun runs): left to interpreter exit, gloo's
    worker threads can abort the process with "terminate called without an active exception" (pytorch#190489).
    Only on success: after an error a peer may be gone and the destroy could hang."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
