"""`ssl-audio hubert-iterate`: HuBERT's rounds of (features -> k-means -> labels -> pretraining).

Iteration 1 clusters MFCCs; iteration n > 1 clusters a layer of iteration n - 1's model. Every artefact of
iteration n lives under <run_dir>/iter<n>/: features/<split>/, km.faiss, labels/<split>.labels, model/.
A stage records its inputs in stage.json and is skipped when its outputs exist for the same inputs, so
an interrupted run picks up where it stopped (pretraining resumes from its newest checkpoint).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_audio.atomic import write_text
from ssl_audio.checks import fail, require_count
from ssl_audio.cluster.features import FeatureSet, FeatureSource, dump_features
from ssl_audio.cluster.kmeans import assign_labels, file_hash, fit_kmeans, sample_frames, save_kmeans
from ssl_audio.cluster.quality import quality_against_alignments
from ssl_audio.configs import save_config
from ssl_audio.data.labels import load_labels, manifest_hash
from ssl_audio.data.manifest import Manifest, load_manifest
from ssl_audio.models.registry import family_config
from ssl_audio.train.checkpoint import find_resume, read_meta
from ssl_audio.train.config import Config, from_dict
from ssl_audio.train.loop import train


@dataclass(frozen=True, kw_only=True)
class IterationConfig:
    """One round. Defaults: HuBERT BASE iteration 1 (MFCC, k=100)."""

    source: str = "mfcc"  # "mfcc", "previous" (the model of the round before) or a checkpoint folder
    layer: int | None = None  # encoder layer to cluster for a model source (HuBERT BASE iteration 2: 6)
    k: int = 100  # clusters (HuBERT BASE: 100, then 500)
    max_points: int = 250_000  # frames sampled (reservoir) to fit k-means
    kmeans_iterations: int = 50
    overrides: tuple[str, ...] = ()  # dotted overrides of `pretrain` for this round, e.g. train.max_updates=400

    def __post_init__(self) -> None:
        require_count(self, "k", "max_points", "kmeans_iterations")
        require_count(self, "layer", minimum=0)


@dataclass(frozen=True, kw_only=True)
class IterateConfig:
    run_dir: str = "checkpoints/hubert_iterate"
    seed: int = 0
    pretrain: dict[str, Any] = field(default_factory=dict)  # a pretraining recipe (family hubert or wavlm)
    iterations: tuple[IterationConfig, ...] = (
        IterationConfig(),
        IterationConfig(source="previous", layer=6, k=500),
    )
    alignments: str | None = None  # phone alignments to report cluster quality (the demo corpus has them)
    device: str = "cpu"  # for dumping model features

    def __post_init__(self) -> None:
        if not self.iterations:
            fail(self, "iterations", "must hold at least one round, got none")
        _check_pretrain(self)


def _check_pretrain(cfg: IterateConfig) -> None:
    """Refuse a bad pretraining section (and round overrides) now, not after a round's features and k-means."""
    try:
        family_config(from_dict(cfg.pretrain).model)
    except ValueError as err:
        raise ValueError(str(err).replace("config key '", "config key 'pretrain.")) from None
    for i, it in enumerate(cfg.iterations):
        if it.overrides:
            try:
                family_config(from_dict(cfg.pretrain, it.overrides).model)
            except ValueError as err:
                fail(cfg, f"iterations[{i}].overrides", str(err))


def _fresh(stage_dir: Path, inputs: dict) -> bool:
    stamp = stage_dir / "stage.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(inputs, default=str))


def _stamp(stage_dir: Path, inputs: dict) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_text(stage_dir / "stage.json", json.dumps(inputs, indent=1, default=str))


def _source_identity(source: str) -> str:
    """What a feature source is, for staleness: 'mfcc' or the checkpoint's weight hash."""
    if source == "mfcc":
        return "mfcc"
    return read_meta(Path(source))["files"]["model.safetensors"]["sha256"]


def run_iterations(cfg: IterateConfig, *, progress: bool = True) -> list[dict]:
    """Run every round; returns one summary dict per round (also written to <run_dir>/summary.json)."""
    run_dir = Path(cfg.run_dir)
    base = from_dict(cfg.pretrain)
    if base.model.family not in ("hubert", "wavlm"):
        raise ValueError(f"pretrain.model.family must be hubert or wavlm, got {base.model.family}")
    splits: dict[str, Manifest] = {"train": load_manifest(Path(base.data.manifest_dir) / "train.tsv")}
    valid_path = Path(base.data.manifest_dir) / "valid.tsv"
    if valid_path.exists() and len(valid_path.read_text().splitlines()) > 1:
        splits["valid"] = load_manifest(valid_path)
    summaries: list[dict] = []
    previous: Path | None = None
    for number, it in enumerate(cfg.iterations, start=1):
        folder = run_dir / f"iter{number}"
        source = it.source
        if source == "previous":
            if previous is None:
                raise ValueError(f"iteration {number}: source 'previous' needs an iteration before it")
            source = str(previous)
        layer = None if source == "mfcc" else it.layer
        identity = _source_identity(source)
        say = print if progress else (lambda *_: None)
        say(f"== iteration {number}: {('MFCC' if source == 'mfcc' else f'layer {layer} of {source}')}, k={it.k}")

        feature_sets = {}
        for split, manifest in splits.items():
            stage = folder / "features" / split
            inputs = {"source": identity, "layer": layer, "manifest": manifest_hash(manifest)}
            if not _fresh(stage, inputs):
                for old in stage.glob("shard*"):
                    old.unlink()
                dump_features(manifest, FeatureSource(name=source, layer=layer), stage, device=cfg.device,
                              progress=progress)  # fmt: skip
                _stamp(stage, inputs)
            feature_sets[split] = FeatureSet(stage)

        km_path = folder / "km.faiss"
        km_inputs = {"features": identity, "layer": layer, "k": it.k, "max_points": it.max_points, "seed": cfg.seed,
                     "iterations": it.kmeans_iterations, "manifest": manifest_hash(splits["train"])}  # fmt: skip
        if not (_fresh(folder / "kmeans", km_inputs) and km_path.is_file()):
            points = sample_frames(feature_sets["train"], max_points=it.max_points, seed=cfg.seed)
            result = fit_kmeans(points, it.k, iterations=it.kmeans_iterations, seed=cfg.seed)
            save_kmeans(km_path, result, feature_sets["train"])
            say(f"k-means: inertia {result.inertia:.4g} on {len(points)} frames, "
                f"{result.empty} empty and {result.tiny} tiny clusters")  # fmt: skip
            _stamp(folder / "kmeans", km_inputs)

        label_paths = {}
        for split, manifest in splits.items():
            path = folder / "labels" / f"{split}.labels"
            inputs = {**km_inputs, "split": split}
            if not (_fresh(folder / "labels" / split, inputs) and path.is_file()):
                assign_labels(km_path, feature_sets[split], manifest, path)
                _stamp(folder / "labels" / split, inputs)
            label_paths[split] = path

        summary: dict[str, Any] = {"iteration": number, "source": source, "layer": layer, "k": it.k}
        if cfg.alignments:
            labels = load_labels(label_paths["train"], splits["train"])
            quality = quality_against_alignments(
                labels.per_utterance, splits["train"].paths, str(splits["train"].root), cfg.alignments, labels.rate
            )
            summary.update(phone_purity=quality.phone_purity, cluster_purity=quality.cluster_purity, pnmi=quality.pnmi)
            say(f"labels of iteration {number}: {quality.line()}")

        overrides = [f"run_dir={folder / 'model'}", f"data.train_labels=[{label_paths['train']}]"]
        if "valid" in label_paths:
            overrides.append(f"data.valid_labels=[{label_paths['valid']}]")
        round_cfg: Config = from_dict(cfg.pretrain, [*it.overrides, *overrides])
        model_dir = folder / "model"
        # What the model depends on, by content (never by path, so a moved run folder stays fresh).
        model_inputs = {**km_inputs, "labels": [file_hash(p) for p in label_paths.values()],
                        "round_overrides": list(it.overrides), "pretrain": cfg.pretrain}  # fmt: skip
        if model_dir.exists() and not _fresh(model_dir, model_inputs):  # trained on other labels or settings
            stale = folder / "model.stale"
            if stale.exists():
                shutil.rmtree(stale)
            model_dir.rename(stale)
            say(f"iteration {number}: labels or settings changed; the old model moved to {stale}")
        if not _fresh(model_dir, model_inputs):  # stamped before training: an interrupted run resumes
            _stamp(model_dir, model_inputs)
        done = find_resume(model_dir)
        if done is None or done.step < round_cfg.train.max_updates:
            save_config(round_cfg, model_dir / "recipe.yaml")
            summary["valid"] = train(round_cfg, resume="auto").valid
        final = find_resume(model_dir)
        if "valid" not in summary and final.val_loss is not None:  # nothing to do: report the saved validation
            summary["valid"] = {"loss": final.val_loss}
        previous = final.path
        summary["checkpoint"] = str(previous)
        summaries.append(summary)
        write_text(run_dir / "summary.json", json.dumps(summaries, indent=1))
    return summaries
