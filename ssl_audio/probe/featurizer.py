"""Frozen frame features for probing: any checkpoint, a randomly initialised twin of one, MFCC or log-mel.

A `Featurizer` maps a waveform (S,) to the frames of K layers (K, T, D): an encoder gives its transformer
input and every layer (K = L + 1, in eval mode, without gradients); MFCC and log-mel give one "layer".
Long audio is encoded in chunks with context on both sides and stitched by `frames_in_chunks`, so every
frame appears exactly once. All K layers go through one call (stacked along the feature axis) so that the
chunking is done once for all of them.

Features are cached on disk, one float16 .npy per audio file:
    <cache>/<featurizer cache id>/<layer tag>/<key of the file>.npy     (K', T, D)
The file key hashes the resolved path, size and modification time, so a changed file is re-encoded and
two tsvs that share files share their features; the layer tag is `all`, or `layers-6` when one run only
needs some layers (a cache of all layers serves those too).

Shapes: S samples, T frames, K layers, D feature dimension.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from einops import rearrange
from torch import Tensor, nn
from tqdm import tqdm

from ssl_audio.audio import SAMPLE_RATE, AudioError, load_audio
from ssl_audio.configs import to_dict
from ssl_audio.data.probe_table import ProbeTable
from ssl_audio.features import (
    CHUNK_SECONDS,
    CONTEXT_SECONDS,
    INFERENCE_DTYPES,
    KALDI_HOP,
    KALDI_WINDOW,
    LOGMEL_BINS,
    MFCC_DIM,
    chunked_frames,
    encoder_layer_frames,
    logmel_features,
    mfcc_features,
)
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.loading import load_model, read_model_config
from ssl_audio.models.registry import build_model
from ssl_audio.step_folder import MODEL_FILE, read_meta

FEATURES_VERSION = 1  # part of every cache id: bump when the computation of features changes
FLOAT16_MAX = 65504.0

FramesFn = Callable[[Tensor, tuple[int, ...]], Tensor]  # (S',) segment, K layer indices -> (T', K * D)


@dataclass(frozen=True, kw_only=True)
class Featurizer:
    """Frame features of K layers of one source: `featurizer(wave, layers)` -> (K', T, D) float32."""

    name: str  # what was asked for: a checkpoint folder, "random:<folder>", "mfcc" or "logmel"
    ident: str  # identity of the weights or recipe: changes whenever the features would
    frames_fn: FramesFn
    num_layers: int  # K: L + 1 for an encoder (its input, then every layer); 1 for MFCC / log-mel
    dim: int  # D
    window: int  # samples a frame covers
    hop: int  # samples between frames
    module: nn.Module | None = None  # the frozen encoder (None for MFCC / log-mel)
    chunk_seconds: float = CHUNK_SECONDS
    max_samples: int | None = None  # the encoder's longest input (Whisper: 30 s): chunks shrink to fit
    context_seconds: float = CONTEXT_SECONDS

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / self.hop  # Hz

    @property
    def cache_id(self) -> str:
        """Folder name of this featurizer's cache: ident, version and chunking (chunked attention differs)."""
        return f"{self.ident}-v{FEATURES_VERSION}-chunk{self.chunk_seconds:g}s-ctx{self.context_seconds:g}s"

    def check_layers(self, layers: Sequence[int] | None) -> tuple[int, ...]:
        """`layers`, or all K when None; an index outside [0, K) raises ValueError."""
        if layers is None:
            return tuple(range(self.num_layers))
        layers = tuple(int(k) for k in layers)
        bad = [k for k in layers if not 0 <= k < self.num_layers]
        if bad or not layers:
            raise ValueError(
                f"layer {bad[0] if bad else '(none)'} is out of range for {self.name}: it has layers "
                f"0..{self.num_layers - 1} (0 = the transformer input)"
            )
        return layers

    def __call__(self, wave: Tensor, layers: Sequence[int] | None = None) -> Tensor:
        """(S,) waveform -> (K', T, D) frames of `layers` (default: all)."""
        layers = self.check_layers(layers)
        frames = chunked_frames(
            lambda segment: self.frames_fn(segment, layers),
            wave,
            window=self.window,
            hop=self.hop,
            chunk_seconds=self.chunk_seconds,
            context_seconds=self.context_seconds,
            max_samples=self.max_samples,
        )  # (T, K' * D)
        return rearrange(frames, "t (k d) -> k t d", k=len(layers))


def encoder_featurizer(
    encoder: Encoder, *, name: str, ident: str, device: str | torch.device = "cpu", dtype: str = "fp32"
) -> Featurizer:
    """Frozen `encoder` (eval mode, no gradients) as a featurizer of its L + 1 hidden states; `dtype="bf16"` runs
    it under bfloat16 autocast (features cached apart from fp32's)."""
    device = torch.device(device)
    encoder = encoder.to(device).eval().requires_grad_(False)
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")

    def frames(segment: Tensor, layers: tuple[int, ...]) -> Tensor:
        return encoder_layer_frames(encoder, segment, layers, device, dtype)  # (T', K * D)

    return Featurizer(
        name=name,
        ident=ident if dtype == "fp32" else f"{ident}-{dtype}",
        frames_fn=frames,
        num_layers=encoder.cfg.num_layers + 1,
        dim=encoder.cfg.dim,
        window=encoder.window,
        hop=encoder.hop,
        max_samples=encoder.max_samples,
        module=encoder,
    )


def checkpoint_featurizer(
    step_dir: str | Path, *, device: str | torch.device = "cpu", dtype: str = "fp32"
) -> Featurizer:
    """The encoder of a checkpoint step folder (any family)."""
    model, cfg = load_model(step_dir)
    weights = read_meta(Path(step_dir), verify=False)["files"][MODEL_FILE]["sha256"]  # load_model verified it
    ident = f"{cfg.family}-{weights[:12]}"
    return encoder_featurizer(model.encoder, name=str(step_dir), ident=ident, device=device, dtype=dtype)


def random_model(step_dir: str | Path, *, seed: int = 0) -> nn.Module:
    """A model of the checkpoint's architecture with fresh weights from `seed` (its weights are not read)."""
    model_cfg = read_model_config(step_dir)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's random state
        torch.manual_seed(seed)
        return build_model(model_cfg).eval()


def random_featurizer(
    step_dir: str | Path, *, seed: int = 0, device: str | torch.device = "cpu", dtype: str = "fp32"
) -> Featurizer:
    """The random-weights baseline: `step_dir`'s architecture, initialised from `seed`."""
    architecture = yaml.safe_dump(to_dict(read_model_config(step_dir)), sort_keys=True)
    digest = hashlib.sha256(f"{architecture}seed={seed}".encode()).hexdigest()[:12]  # not the checkpoint's weights
    model = random_model(step_dir, seed=seed)
    return encoder_featurizer(
        model.encoder, name=f"random:{step_dir}", ident=f"random-{digest}", device=device, dtype=dtype
    )


def _one_layer(fn: Callable[[Tensor], Tensor]) -> FramesFn:
    return lambda segment, layers: fn(segment)  # layers is always (0,)


def mfcc_featurizer() -> Featurizer:
    """39-d MFCC + deltas + delta-deltas at 100 Hz (HuBERT iteration 1's features): one layer."""
    return Featurizer(
        name="mfcc", ident="mfcc", frames_fn=_one_layer(mfcc_features), num_layers=1, dim=MFCC_DIM,
        window=KALDI_WINDOW, hop=KALDI_HOP,
    )  # fmt: skip


def logmel_featurizer() -> Featurizer:
    """80-d kaldi log-mel filterbank at 100 Hz: one layer."""
    return Featurizer(
        name="logmel", ident="logmel", frames_fn=_one_layer(logmel_features), num_layers=1, dim=LOGMEL_BINS,
        window=KALDI_WINDOW, hop=KALDI_HOP,
    )  # fmt: skip


BASELINES = ("random", "mfcc", "logmel")


def make_featurizer(
    *,
    checkpoint: str | None = None,
    baseline: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "fp32",
) -> Featurizer:
    """The one entry point: a checkpoint, `baseline="random"` with the checkpoint's architecture, mfcc, logmel.
    `dtype` (fp32, bf16) is the encoder's inference precision; MFCC and log-mel are computed in fp32 only."""
    if baseline is None:
        if checkpoint is None:
            raise ValueError("give --checkpoint or --baseline")
        return checkpoint_featurizer(checkpoint, device=device, dtype=dtype)
    if baseline == "random":
        if checkpoint is None:
            raise ValueError("--baseline random needs --checkpoint: it builds that checkpoint's architecture")
        return random_featurizer(checkpoint, seed=seed, device=device, dtype=dtype)
    if checkpoint is not None:
        raise ValueError(f"--baseline {baseline} takes no --checkpoint")
    if dtype != "fp32":
        raise ValueError(f"--dtype {dtype} applies to encoder features; --baseline {baseline} is computed in fp32")
    if baseline == "mfcc":
        return mfcc_featurizer()
    if baseline == "logmel":
        return logmel_featurizer()
    raise ValueError(f"unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)}")


# ---------------------------------------------------------------- the cache


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode()).hexdigest()[:24]


def _layer_tag(featurizer: Featurizer, layers: tuple[int, ...]) -> str:
    return "all" if layers == tuple(range(featurizer.num_layers)) else "layers-" + "-".join(map(str, layers))


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write a .npy whole or not at all, so that an interrupted run leaves no truncated feature file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _storable(frames: Tensor, where: str) -> np.ndarray:
    """float16 to halve the cache, or float32 when a value would overflow float16."""
    array = frames.numpy()
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: features hold NaN/Inf")
    return array.astype(np.float16) if float(np.abs(array).max(initial=0.0)) < FLOAT16_MAX else array


def table_features(
    featurizer: Featurizer,
    table: ProbeTable,
    layers: Sequence[int] | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """(K', T, D) frames of `layers` for every row of `table`, from the cache when there (None: no cache).

    The frames are held in memory (float16 as cached): a probe set of 10 h costs about 2.8 GB per layer of a
    768-wide BASE model. Only `all_layers` / `weighted` runs ask for every layer."""
    layers = featurizer.check_layers(layers)
    folder = None if cache_dir is None else Path(cache_dir) / featurizer.cache_id
    tag = _layer_tag(featurizer, layers)
    features = []
    for i in tqdm(range(len(table)), disable=not progress, desc=f"features {table.source.name}", unit="utt"):
        audio = table.audio_path(i)
        if folder is not None:
            key = _file_key(audio) + ".npy"
            if (folder / tag / key).is_file():
                features.append(np.load(folder / tag / key))
                continue
            if (folder / "all" / key).is_file():  # a run that cached every layer serves any subset
                features.append(np.ascontiguousarray(np.load(folder / "all" / key, mmap_mode="r")[list(layers)]))
                continue
        try:
            wave = load_audio(audio)
        except AudioError as err:
            raise ValueError(f"{table.where(i)}: {err}") from None
        frames = _storable(featurizer(wave, layers), table.where(i))
        if folder is not None:
            _save_atomic(folder / tag / key, frames)
        features.append(frames)
    return features
