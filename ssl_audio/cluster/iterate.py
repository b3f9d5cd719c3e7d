"""`ssl-audio hubert-iterate`: HuBERT's rounds of (features -> k-means -> labels -> pretraining).

Iteration 1 clusters MFCCs; iteration n > 1 clusters a layer of iteration n - 1's model. Every artefact of
iteration n lives under <run_dir>/iter<n>/: features/<split>/, km.faiss, labels/<split>.labels, model/.
A stage records its inputs in stage.json and is skipped when its outputs exist for the same inputs, so
an interrupted run picks up where it stopped (pretraining resumes from its newest checkpoint).

Under `accelerate launch` or `torchrun` every process dumps one shard of the features and labels its own rows;
process 0 alone fits k-means (faiss GPU k-means when faiss sees a GPU), joins the label parts, writes the stage
stamps and the summary and decides what is fresh; barriers keep any process from reading a file that another
is still writing. Then every process trains. The files are the same as one process writes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from ssl_audio.atomic import write_text
from ssl_audio.checks import fail, require_count
from ssl_audio.cluster.features import FeatureSet, FeatureSource, dump_features, shard_rows
from ssl_audio.cluster.kmeans import (
    assign_labels,
    file_hash,
    fit_kmeans,
    join_label_parts,
    sample_frames,
    save_kmeans,
)
from ssl_audio.cluster.quality import quality_against_alignments
from ssl_audio.configs import save_config
from ssl_audio.data.labels import load_labels, manifest_hash
from ssl_audio.data.manifest import Manifest, has_split, load_manifest, load_split
from ssl_audio.models.hubert import HubertConfig
from ssl_audio.models.registry import FAMILIES, family_config
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
    pretrain: dict[str, Any] = field(default_factory=dict)  # a pretraining recipe (family hubert, wavlm or whisper)
    iterations: tuple[IterationConfig, ...] = (
        IterationConfig(),
        IterationConfig(source="previous", layer=6, k=500),
    )
    alignments: str | None = None  # phone alignments to report cluster quality (the demo corpus has them)
    device: str = "cpu"  # for dumping model features ("cuda" on many processes: each process's own GPU)
    # How long processes wait for each other, e.g. for process 0's k-means (NCCL's default is 10 minutes).
    wait_minutes: int = 120

    def __post_init__(self) -> None:
        require_count(self, "wait_minutes")
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


@dataclass(frozen=True, kw_only=True)
class Processes:
    """This process among those a launcher started (one process, rank 0, without a launcher)."""

    rank: int
    world: int
    device: torch.device  # of the collectives: this process's GPU under NCCL, else the CPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Barrier: every process gets here before any goes on."""
        if self.world > 1:  # NCCL is told the GPU, rather than guess it
            torch.distributed.barrier(**({"device_ids": [self.device.index]} if self.device.type == "cuda" else {}))

    def main_decides(self, answer: bool) -> bool:
        """Process 0's answer, on every process, so that all take the same branch (and meet at the same barriers).
        Pass `procs.main and ...`: only process 0 looks at the files."""
        if self.world == 1:
            return answer
        flag = torch.tensor([int(answer)], device=self.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())


def join_processes(*, cpu: bool, wait_minutes: int) -> Processes:
    """Join the launcher's process group as accelerate does (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; gloo
    on CPU, NCCL on GPUs), so that `train` finds it set up; without a launcher, a group of one."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=cpu or parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=timedelta(minutes=wait_minutes))
    device = state.device if state.num_processes > 1 and state.backend == "nccl" else torch.device("cpu")
    return Processes(rank=state.process_index, world=state.num_processes, device=device)


def _dump_stage(
    procs: Processes, stage: Path, manifest: Manifest, source: FeatureSource, inputs: dict, *, device: str,
    progress: bool,
) -> FeatureSet:  # fmt: skip
    """Features of one split: shard `rank` of `world` on each process (rows in manifest order, whatever `world`)."""
    if procs.main_decides(procs.main and not _fresh(stage, inputs)):
        if procs.main:
            for old in stage.glob("shard*"):
                old.unlink()
        procs.wait()  # the old shards are gone before any new one is written
        if device == "cuda" and procs.device.type == "cuda":
            device = str(procs.device)  # each process on its own GPU
        dump_features(manifest, source, stage, shard=procs.rank, num_shards=procs.world, device=device,
                      progress=progress and procs.main)  # fmt: skip
        procs.wait()  # every shard is whole before the stamp says so, and before anyone reads them
        if procs.main:
            _stamp(stage, inputs)
    return FeatureSet(stage)


def _label_stage(
    procs: Processes, km_path: Path, features: FeatureSet, manifest: Manifest, out: Path, stage: Path, inputs: dict
) -> None:
    """Labels of one split: each process labels its rows into a part, process 0 joins the parts."""
    if not procs.main_decides(procs.main and not (_fresh(stage, inputs) and out.is_file())):
        return
    if procs.world == 1:
        assign_labels(km_path, features, manifest, out)
    else:
        parts = [stage / f"part{r:04d}of{procs.world:04d}.labels" for r in range(procs.world)]
        rows = shard_rows(len(manifest), procs.rank, procs.world)
        assign_labels(km_path, features, manifest, parts[procs.rank], rows=rows)
        procs.wait()  # every part is written
        if procs.main:
            join_label_parts(parts, manifest, out)
            for part in parts:
                part.unlink()
    if procs.main:
        _stamp(stage, inputs)
    procs.wait()  # the label file is whole before anyone hashes or reads it


def run_iterations(cfg: IterateConfig, *, progress: bool = True) -> list[dict]:
    """Run every round; returns one summary dict per round (also written to <run_dir>/summary.json).

    On many processes, process 0's summaries hold the cluster quality; the others' do not."""
    run_dir = Path(cfg.run_dir)
    base = from_dict(cfg.pretrain)
    if FAMILIES[base.model.family].config_class is not HubertConfig:  # hubert, wavlm, whisper: k-means targets
        labelled = sorted(name for name, family in FAMILIES.items() if family.config_class is HubertConfig)
        raise ValueError(f"pretrain.model.family must be one of {labelled}, got {base.model.family}")
    procs = join_processes(cpu=base.train.cpu, wait_minutes=cfg.wait_minutes)
    splits: dict[str, Manifest] = {"train": load_manifest(Path(base.data.manifest_dir) / "train.tsv")}
    if has_split(base.data.manifest_dir, "valid"):
        splits["valid"] = load_split(base.data.manifest_dir, "valid")
    say = print if progress and procs.main else (lambda *_: None)
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
        say(f"== iteration {number}: {('MFCC' if source == 'mfcc' else f'layer {layer} of {source}')}, k={it.k}")

        feature_sets = {}
        for split, manifest in splits.items():
            inputs = {"source": identity, "layer": layer, "manifest": manifest_hash(manifest)}
            feature_sets[split] = _dump_stage(procs, folder / "features" / split, manifest,
                                              FeatureSource(name=source, layer=layer), inputs, device=cfg.device,
                                              progress=progress)  # fmt: skip

        km_path = folder / "km.faiss"
        km_inputs = {"features": identity, "layer": layer, "k": it.k, "max_points": it.max_points, "seed": cfg.seed,
                     "iterations": it.kmeans_iterations, "manifest": manifest_hash(splits["train"])}  # fmt: skip
        if procs.main_decides(procs.main and not (_fresh(folder / "kmeans", km_inputs) and km_path.is_file())):
            if procs.main:  # the same sample, hence the same model, as one process fits
                points = sample_frames(feature_sets["train"], max_points=it.max_points, seed=cfg.seed)
                result = fit_kmeans(points, it.k, iterations=it.kmeans_iterations, seed=cfg.seed)
                save_kmeans(km_path, result, feature_sets["train"])
                say(f"k-means: inertia {result.inertia:.4g} on {len(points)} frames, "
                    f"{result.empty} empty and {result.tiny} tiny clusters")  # fmt: skip
                _stamp(folder / "kmeans", km_inputs)
            procs.wait()  # km.faiss is saved before anyone reads it

        label_paths = {}
        for split, manifest in splits.items():
            path = folder / "labels" / f"{split}.labels"
            _label_stage(procs, km_path, feature_sets[split], manifest, path, folder / "labels" / split,
                         {**km_inputs, "split": split})  # fmt: skip
            label_paths[split] = path

        summary: dict[str, Any] = {"iteration": number, "source": source, "layer": layer, "k": it.k}
        if cfg.alignments and procs.main:
            labels = load_labels(label_paths["train"], splits["train"])
            quality = quality_against_alignments(
                labels.per_utterance,
                splits["train"].paths,
                str(splits["train"].root),
                cfg.alignments,
                labels.rate,
                window=labels.window,
                offset=labels.offset,
            )
            summary.update(phone_purity=quality.phone_purity, cluster_purity=quality.cluster_purity, pnmi=quality.pnmi)
            say(f"labels of iteration {number}: {quality.line()}")

        overrides = [f"run_dir={folder / 'model'}", f"data.train_labels=[{label_paths['train']}]"]
        if "valid" in label_paths:
            overrides.append(f"data.valid_labels=[{label_paths['valid']}]")
        round_cfg: Config = from_dict(cfg.pretrain, [*it.overrides, *overrides])
        model_dir = folder / "model"
        if procs.main:
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
        procs.wait()  # no process looks for checkpoints before a stale model has moved away
        done = find_resume(model_dir) if procs.main else None
        if procs.main_decides(procs.main and (done is None or done.step < round_cfg.train.max_updates)):
            if procs.main:
                save_config(round_cfg, model_dir / "recipe.yaml")
            summary["valid"] = train(round_cfg, resume="auto").valid  # saves, then waits for every process
        final = find_resume(model_dir)
        if "valid" not in summary and final.val_loss is not None:  # nothing to do: report the saved validation
            summary["valid"] = {"loss": final.val_loss}
        previous = final.path
        summary["checkpoint"] = str(previous)
        summaries.append(summary)
        if procs.main:
            write_text(run_dir / "summary.json", json.dumps(summaries, indent=1))
    return summaries
