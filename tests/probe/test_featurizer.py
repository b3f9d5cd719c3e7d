"""Featurizers: exact chunk stitching, the on-disk cache, checkpoint / random / MFCC / log-mel sources."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from torch import nn

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.cli import main
from ssl_audio.configs import to_dict
from ssl_audio.data.probe_table import read_table
from ssl_audio.features import mfcc_features
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.registry import ModelConfig, build_model
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.probe.featurizer import (
    checkpoint_featurizer,
    encoder_featurizer,
    logmel_featurizer,
    make_featurizer,
    mfcc_featurizer,
    random_featurizer,
    random_model,
    table_features,
)
from ssl_audio.train.checkpoint import save_checkpoint
from ssl_audio.train.config import Config

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, projection_dropout=0.0, activation_dropout=0.0)


def _save(run_dir: Path, cfg: Config, model: nn.Module) -> Path:
    config_text = yaml.safe_dump(to_dict(cfg))
    return save_checkpoint(run_dir, 0, model_state=model.state_dict(), train_state={}, config_text=config_text)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny wav2vec2 step folder whose weights are not any seed's initialisation (as after training)."""
    cfg = Config(model=ModelConfig(family="wav2vec2", preset="tiny"))
    torch.manual_seed(1234)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return _save(tmp_path_factory.mktemp("run"), cfg, model)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """keywords.tsv: 6 clips of 0.5-1 s, two tones (classes) by three speakers."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = ["path\tspeaker\tkeyword"]
    for i in range(6):
        keyword, freq = ("low", 300.0) if i % 2 else ("high", 1400.0)
        t = np.arange(int(rng.integers(8_000, 16_000))) / SAMPLE_RATE
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"clip{i}.wav", wave.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        rows.append(f"clip{i}.wav\tspk{i // 2}\t{keyword}")
    (root / "keywords.tsv").write_text("\n".join(rows) + "\n")
    return read_table(root / "keywords.tsv")


def _local_encoder(*, attention: bool) -> Encoder:
    """A tiny trunk whose features are per-frame up to the positional convolution ("layer_norm" extractor).
    Without attention (its output projection zeroed), every layer is position-wise, so the whole encoder
    has a finite receptive field and chunked encoding with enough context must reproduce it exactly."""
    torch.manual_seed(0)
    encoder = Encoder(
        tiny_encoder(frontend=dataclasses.replace(tiny_encoder().frontend, mode="layer_norm", bias=True), **NO_DROPOUT)
    )
    if not attention:
        for layer in encoder.transformer.layers:
            nn.init.zeros_(layer.attention.out.weight)
            nn.init.zeros_(layer.attention.out.bias)
    return encoder


def _counting(featurizer):  # noqa: ANN001, ANN202
    calls = []

    def frames_fn(segment: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
        calls.append(segment.shape[0])
        return featurizer.frames_fn(segment, layers)

    return dataclasses.replace(featurizer, frames_fn=frames_fn), calls


@pytest.mark.parametrize("num_samples", [52_800, 53_117])  # 3.3 s: many chunks; an odd length
def test_chunked_encoding_equals_whole_utterance_for_a_local_model(num_samples: int) -> None:
    # Chunks of 0.5 s with 0.4 s (20 frames) of context: more than the positional conv's reach (kernel 32,
    # 16 frames each side), so with attention removed each stitched frame saw exactly the audio it sees whole.
    featurizer = encoder_featurizer(_local_encoder(attention=False), name="local", ident="local")
    featurizer, calls = _counting(dataclasses.replace(featurizer, chunk_seconds=0.5, context_seconds=0.4))
    wave = torch.randn(num_samples, generator=torch.Generator().manual_seed(0))
    stitched = featurizer(wave)  # (K, T, D)
    assert len(calls) > 5  # it really was chunked
    with torch.no_grad():
        whole = torch.stack(featurizer.module(wave[None]).hidden_states)[:, 0]  # (K, T, D)
    assert stitched.shape == whole.shape == (5, (num_samples - 400) // 320 + 1, 96)
    torch.testing.assert_close(stitched, whole, rtol=1e-4, atol=1e-4)


def test_chunked_encoding_with_attention_keeps_frame_count_and_local_layers() -> None:
    # Global attention sees the chunk, not the utterance, so layers >= 1 legitimately differ everywhere (not only
    # near seams); layer 0 (CNN + positional conv) is local and must still match exactly, and no frame is lost.
    featurizer = encoder_featurizer(_local_encoder(attention=True), name="attn", ident="attn")
    featurizer = dataclasses.replace(featurizer, chunk_seconds=0.5, context_seconds=0.4)
    wave = torch.randn(40_000, generator=torch.Generator().manual_seed(1))
    stitched = featurizer(wave)
    with torch.no_grad():
        whole = torch.stack(featurizer.module(wave[None]).hidden_states)[:, 0]
    assert stitched.shape == whole.shape == (5, 124, 96)
    torch.testing.assert_close(stitched[0], whole[0], rtol=1e-4, atol=1e-4)
    assert featurizer(wave, [3, 1]).shape == (2, 124, 96)
    torch.testing.assert_close(featurizer(wave, [3, 1]), stitched[[3, 1]], rtol=1e-5, atol=1e-5)


def test_mfcc_and_logmel_chunked_equal_whole() -> None:
    wave = torch.randn(48_123, generator=torch.Generator().manual_seed(2)) * 0.1
    mfcc = dataclasses.replace(mfcc_featurizer(), chunk_seconds=0.5, context_seconds=0.2)
    frames = (48_123 - 400) // 160 + 1
    assert mfcc(wave).shape == (1, frames, 39)
    torch.testing.assert_close(mfcc(wave)[0], mfcc_features(wave), rtol=1e-4, atol=1e-4)
    logmel = dataclasses.replace(logmel_featurizer(), chunk_seconds=0.5, context_seconds=0.2)
    assert logmel(wave).shape == (1, frames, 80) and logmel.frame_rate == 100.0
    torch.testing.assert_close(logmel(wave), logmel_featurizer()(wave), rtol=1e-4, atol=1e-4)


def test_checkpoint_featurizer_is_the_frozen_trained_encoder(checkpoint: Path) -> None:
    featurizer = checkpoint_featurizer(checkpoint)
    assert (featurizer.num_layers, featurizer.dim, featurizer.frame_rate, featurizer.window) == (5, 96, 50.0, 400)
    encoder = featurizer.module
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    saved = build_model(ModelConfig(family="wav2vec2", preset="tiny"))
    from safetensors.torch import load_file

    saved.load_state_dict(load_file(checkpoint / "model.safetensors"))
    for name, value in saved.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value), name
    assert featurizer.cache_id == checkpoint_featurizer(checkpoint).cache_id  # same weights, same cache


def test_random_baseline_has_the_architecture_but_fresh_seeded_weights(checkpoint: Path) -> None:
    trained = checkpoint_featurizer(checkpoint).module.state_dict()
    fresh = random_model(checkpoint, seed=0).encoder.state_dict()
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in trained.items()}
    matrices = [k for k, v in trained.items() if v.ndim >= 2]
    assert matrices and all(not torch.equal(fresh[k], trained[k]) for k in matrices)
    again = random_model(checkpoint, seed=0).encoder.state_dict()
    assert all(torch.equal(again[k], fresh[k]) for k in fresh)  # seeded
    other = random_model(checkpoint, seed=1).encoder.state_dict()
    assert any(not torch.equal(other[k], fresh[k]) for k in matrices)
    baseline = random_featurizer(checkpoint, seed=0)
    assert baseline.cache_id != checkpoint_featurizer(checkpoint).cache_id
    assert baseline.cache_id != random_featurizer(checkpoint, seed=1).cache_id
    assert baseline.name.startswith("random:") and baseline.num_layers == 5


def test_cache_hit_does_not_run_the_encoder(checkpoint: Path, table, tmp_path: Path) -> None:  # noqa: ANN001
    featurizer = checkpoint_featurizer(checkpoint)
    calls = []
    featurizer.module.register_forward_hook(lambda *args: calls.append(1))
    first = table_features(featurizer, table, cache_dir=tmp_path)
    assert len(calls) == len(table) == 6
    assert all(f.dtype == np.float16 and f.shape[:1] == (5,) for f in first)
    second = table_features(featurizer, table, cache_dir=tmp_path)
    subset = table_features(checkpoint_featurizer(checkpoint), table, [2], cache_dir=tmp_path)  # served by "all"
    assert len(calls) == 6
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(np.array_equal(a[2:3], b) for a, b in zip(first, subset))

    stat = table.audio_path(1).stat()  # a changed file is encoded again
    os.utime(table.audio_path(1), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    table_features(featurizer, table, cache_dir=tmp_path)
    assert len(calls) == 7

    direct = featurizer(torch.from_numpy(sf.read(table.audio_path(0), dtype="float32")[0]))  # float16 storage
    np.testing.assert_allclose(first[0].astype(np.float32), direct.numpy(), rtol=2e-3, atol=2e-3)


def test_probe_every_layer_encodes_each_file_once(checkpoint: Path, table, tmp_path: Path) -> None:  # noqa: ANN001
    from ssl_audio.probe.tasks import ProbeConfig, run_probe

    featurizer = checkpoint_featurizer(checkpoint)
    calls = []
    featurizer.module.register_forward_hook(lambda *args: calls.append(1))
    cfg = ProbeConfig(task="classify", train=str(table.source), test=str(table.source), all_layers=True, epochs=20)
    results = run_probe(cfg, featurizer, cache_dir=tmp_path)
    assert len(calls) == 6  # the train and test tsv are the same files: one encoding serves both and 6 probes
    assert results["probe"] == "weighted" and [p["layer"] for p in results["per_layer"]] == [0, 1, 2, 3, 4]
    assert len(results["layer_weights"]) == 5 and abs(sum(results["layer_weights"]) - 1) < 1e-6
    verify = ProbeConfig(task="verify", train=str(table.source), test=str(table.source))
    assert run_probe(verify, featurizer, cache_dir=tmp_path)["probe"] == "layer 2"  # the middle layer
    assert len(calls) == 6


def test_cli_random_baseline_and_mismatched_checkpoint(
    checkpoint: Path,
    table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,  # noqa: ANN001
) -> None:
    out = tmp_path / "random"
    args = ["probe", "classify", "--baseline", "random", "--checkpoint", str(checkpoint), "--layer", "4"]
    assert main([*args, "--train", str(table.source), "--test", str(table.source), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["featurizer"] == f"random:{checkpoint}" and results["probe"] == "layer 4"

    # Weights of one architecture under the config of another: load_weights names what does not fit.
    cfg = Config(model=ModelConfig(family="wav2vec2", preset="tiny", config={"encoder": {"dim": 64}}))
    bad = _save(tmp_path / "bad", cfg, build_model(ModelConfig(family="wav2vec2", preset="tiny")))
    with pytest.raises(ValueError, match="does not fit this model's architecture"):
        make_featurizer(checkpoint=str(bad))
    capsys.readouterr()
    assert main(["probe", "classify", "--checkpoint", str(bad), "--train", str(table.source), "--test", "x"]) == 2
    assert "shape mismatch" in capsys.readouterr().err


def test_make_featurizer_refuses_bad_combinations(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="needs --checkpoint"):
        make_featurizer(baseline="random")
    with pytest.raises(ValueError, match="takes no --checkpoint"):
        make_featurizer(baseline="mfcc", checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match="give --checkpoint or --baseline"):
        make_featurizer()
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        checkpoint_featurizer(checkpoint).check_layers([5])
