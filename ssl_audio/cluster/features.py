"""Features for k-means, dumped per shard so that many processes or machines split the work.

Sources: 39-d MFCC + delta + delta-delta at 100 Hz (HuBERT iteration 1), or the hidden states of layer L of
a checkpoint at 50 Hz (later iterations). A shard is a raw float32 file of all its frames (rows in
manifest order) plus a JSON file, written last, with the source, layer, frame rate, the frames' window and
offset (nn/frontend.py's framing; the label header carries them on), dimension and the number of frames of every
row. Reading memory-maps the frames, so nothing needs to fit in RAM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssl_audio.atomic import write_text
from ssl_audio.audio import SAMPLE_RATE, load_audio
from ssl_audio.data.labels import manifest_hash
from ssl_audio.data.manifest import Manifest
from ssl_audio.features import (
    INFERENCE_DTYPES,
    KALDI_HOP,
    KALDI_RATE,
    KALDI_WINDOW,
    chunked_frames,
    encoder_layer_frames,
    mfcc_features,
)
from ssl_audio.models.loading import load_encoder


@dataclass(frozen=True, kw_only=True)
class FeatureSource:
    """What `dump_features` computes: MFCCs, or layer `layer` of a checkpoint's encoder."""

    name: str  # "mfcc" or the checkpoint path
    layer: int | None = None
    dtype: str = "fp32"  # a checkpoint's inference precision: fp32 or bf16 (autocast); MFCCs are always fp32

    def load(self, device: torch.device):  # noqa: ANN201 - (fn, rate, window, hop, longest input, offset)
        if self.dtype not in INFERENCE_DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {self.dtype!r}")
        if self.name == "mfcc":
            if self.dtype != "fp32":
                raise ValueError(f"--dtype {self.dtype} applies to checkpoint features; mfcc is computed in fp32")
            return mfcc_features, KALDI_RATE, KALDI_WINDOW, KALDI_HOP, None, 0  # kaldi's snip_edges: from sample 0

        encoder = load_encoder(self.name).to(device)
        if self.layer is None or not 0 <= self.layer <= encoder.cfg.num_layers:
            raise ValueError(f"--layer must be in [0, {encoder.cfg.num_layers}] for {self.name}, got {self.layer}")
        layers = (self.layer,)

        def encode(wave: torch.Tensor) -> torch.Tensor:
            return encoder_layer_frames(encoder, wave, layers, device, self.dtype)

        return encode, SAMPLE_RATE / encoder.hop, encoder.window, encoder.hop, encoder.max_samples, encoder.offset


def shard_rows(num_rows: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous row range [first, last) of one shard."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, {num_shards}), got {shard}")
    return shard * num_rows // num_shards, (shard + 1) * num_rows // num_shards


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"environment variable {name}={env[name]!r} is not an integer") from None


def shard_from_environment(env: Mapping[str, str]) -> tuple[int, int]:
    """(shard, num_shards) of this process from its launcher: RANK/WORLD_SIZE (torchrun, accelerate launch),
    else a Slurm job array's SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (counted from SLURM_ARRAY_TASK_MIN in
    steps of SLURM_ARRAY_TASK_STEP), else (0, 1)."""
    if "RANK" in env or "WORLD_SIZE" in env:
        for name, other in (("RANK", "WORLD_SIZE"), ("WORLD_SIZE", "RANK")):
            if name not in env:
                raise ValueError(f"environment variable {name} is unset but {other} is set; set both or neither")
        shard, count = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
        where = f"RANK={shard}, WORLD_SIZE={count}"
    elif "SLURM_ARRAY_TASK_ID" in env:
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise ValueError("environment variable SLURM_ARRAY_TASK_COUNT is unset but SLURM_ARRAY_TASK_ID is set")
        task, count = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        low = _env_int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        where = (f"SLURM_ARRAY_TASK_ID={task} (SLURM_ARRAY_TASK_MIN={low}, SLURM_ARRAY_TASK_STEP={step}, "
                 f"SLURM_ARRAY_TASK_COUNT={count})")  # fmt: skip
        if step < 1 or (task - low) % step:
            raise ValueError(f"{where}: the task is not on the array's grid; pass --shard and --num-shards")
        shard = (task - low) // step
    else:
        return 0, 1
    if count < 1 or not 0 <= shard < count:
        raise ValueError(f"{where}: shard {shard} is not in [0, {count}); pass --shard and --num-shards")
    return shard, count


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard{shard:04d}of{num_shards:04d}"


def dump_features(
    manifest: Manifest,
    source: FeatureSource,
    out_dir: str | Path,
    *,
    shard: int = 0,
    num_shards: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Path:
    """Compute one shard's features and write them; returns the shard's JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fn, rate, window, hop, max_samples, offset = source.load(torch.device(device))
    first, last = shard_rows(len(manifest), shard, num_shards)
    stem = out_dir / shard_name(shard, num_shards)
    tmp = stem.with_suffix(".f32.tmp")
    lengths, dim = [], None
    with open(tmp, "wb") as f:
        for row in tqdm(range(first, last), disable=not progress, desc=f"features {shard}/{num_shards}", unit="utt"):
            wave = load_audio(manifest.audio_path(row))
            feats = chunked_frames(fn, wave, window=window, hop=hop, max_samples=max_samples).numpy().astype(np.float32)
            if not np.isfinite(feats).all():
                raise ValueError(f"{manifest.audio_path(row)}: features from {source.name} hold NaN/Inf")
            dim = feats.shape[1]
            f.write(feats.tobytes())
            lengths.append(int(feats.shape[0]))
    os.replace(tmp, stem.with_suffix(".f32"))
    meta = {
        "source": source.name, "layer": source.layer, "frame_rate": rate, "window": window, "offset": offset,
        "dim": dim, "rows": [first, last], "lengths": lengths, "manifest": manifest_hash(manifest), "shard": shard,
        "num_shards": num_shards, **({} if source.dtype == "fp32" else {"dtype": source.dtype}),
    }  # fmt: skip
    write_text(stem.with_suffix(".json"), json.dumps(meta))  # after the .f32: the JSON says the shard is whole
    return stem.with_suffix(".json")


SHARD_KEYS = ("source", "layer", "frame_rate", "dim", "lengths", "manifest", "shard", "num_shards")


def read_shard_meta(path: Path) -> dict:
    """One shard's JSON, checked to hold what reading needs; errors name the file (and the line)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}); re-run dump-features for this shard"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; re-run dump-features for this shard") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    missing = [key for key in SHARD_KEYS if key not in meta]
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(map(repr, missing))}; re-run dump-features for this shard")
    if not isinstance(meta["lengths"], list) or not all(isinstance(n, int) and n >= 0 for n in meta["lengths"]):
        raise ValueError(f"{path}: 'lengths' must be a list of frame counts")
    return meta


class FeatureSet:
    """All shards of a dump, checked to be complete and consistent; frames are memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        metas = [read_shard_meta(p) for p in sorted(self.folder.glob("shard*of*.json"))]
        if not metas:
            raise ValueError(f"{self.folder}: no feature shards (run `ssl-audio dump-features`)")
        counts = {m["num_shards"] for m in metas}
        if len(counts) != 1:
            raise ValueError(f"{self.folder}: shards from dumps with different --num-shards {sorted(counts)}")
        if len(metas) != counts.pop():
            missing = sorted(set(range(metas[0]["num_shards"])) - {m["shard"] for m in metas})
            raise ValueError(f"{self.folder}: incomplete dump, shards {missing} are missing")
        for key in ("source", "layer", "frame_rate", "window", "offset", "dim", "manifest"):
            # a shard without rows knows no dimension: it agrees with any
            if len({json.dumps(m.get(key)) for m in metas if not (key == "dim" and m[key] is None)}) > 1:
                raise ValueError(f"{self.folder}: shards disagree on {key!r}")
        self.metas = sorted(metas, key=lambda m: m["shard"])
        first = self.metas[0]
        self.source, self.layer, self.frame_rate = first["source"], first["layer"], float(first["frame_rate"])
        # dumps written before shards said their framing have neither (None: the label header then omits them)
        self.window, self.offset = first.get("window"), first.get("offset")
        self.dim = next((int(m["dim"]) for m in metas if m["dim"] is not None), 0)
        self.manifest = first["manifest"]
        self.lengths = [n for m in self.metas for n in m["lengths"]]

    @property
    def num_frames(self) -> int:
        return sum(self.lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def check_manifest(self, manifest: Manifest) -> None:
        if manifest_hash(manifest) != self.manifest or len(manifest) != len(self):
            raise ValueError(f"{self.folder}: features were dumped from another manifest than the one given")

    def __iter__(self) -> Iterator[np.ndarray]:
        """(T, D) float32 per manifest row, in order."""
        for meta in self.metas:
            path = self.folder / (shard_name(meta["shard"], meta["num_shards"]) + ".f32")
            expected = sum(meta["lengths"]) * self.dim * 4
            if not path.is_file():
                raise ValueError(f"{path}: missing (the shard's .json exists; re-run dump-features for it)")
            if path.stat().st_size != expected:
                raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {expected} (truncated dump?)")
            if expected == 0:
                yield from (np.zeros((0, self.dim), np.float32) for _ in meta["lengths"])
                continue
            frames = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, self.dim)
            start = 0
            for n in meta["lengths"]:
                yield frames[start : start + n]
                start += n
