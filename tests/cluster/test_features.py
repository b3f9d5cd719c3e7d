"""Feature dumps for k-means: MFCC and checkpoint-layer features against direct computations, shards, errors.

Oracles: torchaudio's kaldi MFCC + compute_deltas run here on the file as soundfile reads it, and a trunk
built here from the checkpoint's weights (`Encoder(cfg)(wave[None], num_layers=L).hidden_states[L]`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from ssl_audio.cluster.features import FeatureSet, FeatureSource, dump_features, shard_rows
from ssl_audio.configs import save_config
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest
from ssl_audio.models.encoder import Encoder
from ssl_audio.models.registry import ModelConfig, build_model, family_config
from ssl_audio.train.checkpoint import save_checkpoint
from ssl_audio.train.config import Config

SR = 16_000
# Utterance lengths in samples: just above a multiple of the 160-sample hop, a short one, and one that
# is not aligned at all. The long-audio path (30 s chunks) gets its own test.
LENGTHS = (8_000 + 161, 4_800, 9_457, 6_400 + 400, 5_345)


def write_corpus(root: Path, lengths: tuple[int, ...], seed: int = 0) -> Manifest:
    """Chirps plus noise as 16-bit wavs under root/audio, and root/manifest/train.tsv of all of them."""
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True)
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        f0, f1 = rng.uniform(100, 3000, size=2)
        wave = 0.4 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2)) + 0.05 * rng.standard_normal(n)
        sf.write(audio / f"utt{i:02d}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
    build_manifests([audio], root / "manifest", valid_fraction=0.0)
    manifest = load_manifest(root / "manifest" / "train.tsv")
    assert manifest.num_samples == tuple(lengths)  # build_manifests keeps the sorted file order
    return manifest


def read_wave(manifest: Manifest, row: int) -> torch.Tensor:
    data, rate = sf.read(manifest.audio_path(row), dtype="float32")
    assert rate == SR and data.ndim == 1
    return torch.from_numpy(data)


def oracle_mfcc(wave: torch.Tensor) -> torch.Tensor:
    mfcc = kaldi.mfcc(wave[None], sample_frequency=SR, use_energy=False)  # (T, 13)
    d1 = AF.compute_deltas(mfcc.T)
    d2 = AF.compute_deltas(d1)
    return torch.cat([mfcc.T, d1, d2]).T  # (T, 39)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return write_corpus(tmp_path_factory.mktemp("features"), LENGTHS)


@pytest.fixture(scope="module")
def mfcc_dump(corpus: Manifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mfcc1")
    meta = dump_features(corpus, FeatureSource(name="mfcc"), out)
    assert meta == out / "shard0000of0001.json"
    return out


def test_mfcc_dump_equals_kaldi_mfcc_with_deltas(corpus: Manifest, mfcc_dump: Path):
    features = FeatureSet(mfcc_dump)
    assert (features.source, features.layer, features.frame_rate, features.dim) == ("mfcc", None, 100.0, 39)
    assert len(features) == len(corpus)
    expected_lengths = [(n - 400) // 160 + 1 for n in corpus.num_samples]
    assert features.lengths == expected_lengths
    assert features.num_frames == sum(expected_lengths)
    features.check_manifest(corpus)
    rows = list(features)
    assert len(rows) == len(corpus)
    for i, block in enumerate(rows):
        assert block.dtype == np.float32 and block.shape == (expected_lengths[i], 39)
        expected = oracle_mfcc(read_wave(corpus, i)).numpy()
        np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-5)


def test_long_audio_is_chunked_without_changing_mfcc(tmp_path: Path):
    """Over 34 s (30 s chunk + 2 s context on each side), the dump stitches chunks: same frames as one pass."""
    n = 35 * SR + 123
    manifest = write_corpus(tmp_path / "long", (n,), seed=5)
    dump_features(manifest, FeatureSource(name="mfcc"), tmp_path / "feats")
    (block,) = list(FeatureSet(tmp_path / "feats"))
    expected = oracle_mfcc(read_wave(manifest, 0)).numpy()
    assert block.shape == expected.shape == ((n - 400) // 160 + 1, 39)
    np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-5)


def test_three_shards_equal_one_shard_row_by_row(corpus: Manifest, mfcc_dump: Path, tmp_path: Path):
    for shard in (2, 0, 1):  # any order, as independent jobs would finish
        dump_features(corpus, FeatureSource(name="mfcc"), tmp_path, shard=shard, num_shards=3)
    sharded, whole = FeatureSet(tmp_path), FeatureSet(mfcc_dump)
    assert sharded.lengths == whole.lengths
    covered = [shard_rows(len(corpus), s, 3) for s in range(3)]
    assert covered[0][0] == 0 and covered[-1][1] == len(corpus)
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    pairs = list(zip(sharded, whole, strict=True))
    assert len(pairs) == len(corpus)
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)
    sharded.check_manifest(corpus)


def test_missing_shard_is_named(corpus: Manifest, tmp_path: Path):
    for shard in (0, 2):
        dump_features(corpus, FeatureSource(name="mfcc"), tmp_path, shard=shard, num_shards=3)
    with pytest.raises(ValueError, match=r"shards \[1\] are missing"):
        FeatureSet(tmp_path)


def test_truncated_frames_file_is_detected(corpus: Manifest, tmp_path: Path):
    dump_features(corpus, FeatureSource(name="mfcc"), tmp_path, shard=1, num_shards=2)
    dump_features(corpus, FeatureSource(name="mfcc"), tmp_path, shard=0, num_shards=2)
    frames = tmp_path / "shard0001of0002.f32"
    data = frames.read_bytes()
    frames.write_bytes(data[: len(data) - 4 * 39])  # one frame short
    features = FeatureSet(tmp_path)
    with pytest.raises(ValueError, match=r"shard0001of0002\.f32.*truncated"):
        list(features)


def test_shards_of_different_dumps_are_rejected(corpus: Manifest, tmp_path: Path):
    # Same folder, two dumps with different --num-shards.
    dump_features(corpus, FeatureSource(name="mfcc"), tmp_path / "a", shard=0, num_shards=1)
    dump_features(corpus, FeatureSource(name="mfcc"), tmp_path / "a", shard=0, num_shards=2)
    with pytest.raises(ValueError, match="different --num-shards"):
        FeatureSet(tmp_path / "a")
    # Same shard count, but shard 1 comes from a dump of another manifest.
    other = write_corpus(tmp_path / "other", (4_000, 4_100, 4_200), seed=9)
    dump_features(corpus, FeatureSource(name="mfcc"), tmp_path / "b", shard=0, num_shards=2)
    dump_features(other, FeatureSource(name="mfcc"), tmp_path / "c", shard=1, num_shards=2)
    for suffix in (".json", ".f32"):
        shutil.copy(tmp_path / "c" / f"shard0001of0002{suffix}", tmp_path / "b")
    with pytest.raises(ValueError, match="disagree on 'manifest'"):
        FeatureSet(tmp_path / "b")


def test_empty_folder_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no feature shards"):
        FeatureSet(tmp_path)


def test_check_manifest_rejects_another_manifest(corpus: Manifest, mfcc_dump: Path, tmp_path: Path):
    features = FeatureSet(mfcc_dump)
    other = write_corpus(tmp_path, LENGTHS[:-1] + (LENGTHS[-1] + 1,), seed=0)  # one row one sample longer
    with pytest.raises(ValueError, match="another manifest"):
        features.check_manifest(other)
    with pytest.raises(ValueError, match="another manifest"):
        features.check_manifest(
            Manifest(root=corpus.root, paths=corpus.paths[:-1], num_samples=corpus.num_samples[:-1])
        )


def test_missing_frames_file_is_a_value_error(corpus: Manifest, tmp_path: Path):
    dump_features(corpus, FeatureSource(name="mfcc"), tmp_path)
    (tmp_path / "shard0000of0001.f32").unlink()
    with pytest.raises(ValueError, match=r"shard0000of0001\.f32"):
        list(FeatureSet(tmp_path))


def test_more_shards_than_rows(tmp_path: Path):
    manifest = write_corpus(tmp_path / "corpus", (8_000, 9_000), seed=3)
    for shard in range(3):  # rows per shard: 0, 1, 1
        dump_features(manifest, FeatureSource(name="mfcc"), tmp_path / "feats", shard=shard, num_shards=3)
    features = FeatureSet(tmp_path / "feats")
    assert features.dim == 39
    assert [len(block) for block in features] == [(n - 400) // 160 + 1 for n in manifest.num_samples]


# --- features from a checkpoint's layer -------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A step folder of a randomly initialised tiny wav2vec 2.0, written as the training loop writes one."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg = Config(run_dir=str(root / "run"), model=ModelConfig(family="wav2vec2", preset="tiny"))
    save_config(cfg, root / "config.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    return save_checkpoint(
        root / "run", 2, model_state=model.state_dict(), train_state={}, config_text=(root / "config.yaml").read_text()
    )


def reference_encoder(checkpoint: Path) -> Encoder:
    """The trunk built from the tiny preset's config, weights taken straight from the safetensors file."""
    from safetensors.torch import load_file

    encoder = Encoder(family_config(ModelConfig(family="wav2vec2", preset="tiny")).encoder)
    state = load_file(checkpoint / "model.safetensors")
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
    return encoder.eval()


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_layer_features_equal_the_encoder_run_directly(corpus: Manifest, checkpoint: Path, tmp_path: Path, layer: int):
    corpus = Manifest(root=corpus.root, paths=corpus.paths[:3], num_samples=corpus.num_samples[:3])
    dump_features(corpus, FeatureSource(name=str(checkpoint), layer=layer), tmp_path, num_shards=1)
    features = FeatureSet(tmp_path)
    assert (features.source, features.layer, features.frame_rate, features.dim) == (str(checkpoint), layer, 50.0, 96)
    assert features.lengths == [(n - 400) // 320 + 1 for n in corpus.num_samples]
    encoder = reference_encoder(checkpoint)
    for i, block in enumerate(features):
        with torch.no_grad():
            out = encoder(read_wave(corpus, i)[None], num_layers=layer)
        expected = out.hidden_states[layer][0].numpy()
        assert len(out.hidden_states) == layer + 1
        np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [None, -1, 5])
def test_invalid_layer_raises(corpus: Manifest, checkpoint: Path, tmp_path: Path, layer: int | None):
    with pytest.raises(ValueError, match=r"--layer must be in \[0, 4\]"):
        dump_features(corpus, FeatureSource(name=str(checkpoint), layer=layer), tmp_path)
    assert not list(tmp_path.glob("shard*"))


def test_bad_shard_index_raises(corpus: Manifest, tmp_path: Path):
    with pytest.raises(ValueError, match="--shard"):
        dump_features(corpus, FeatureSource(name="mfcc"), tmp_path, shard=3, num_shards=3)
