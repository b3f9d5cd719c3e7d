"""The statistics-pooling head (SUPERB SID/ASV style): padding-aware mean + std, the learned weighted sum of
layers, and the head in the classify and verify tasks.

Oracles: numpy by hand (mean and population std of each row's valid frames; softmax weights, per-layer
standardisation and the weighted sum written out); verify's EER against embeddings computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_audio.data.probe_table import read_table
from ssl_audio.probe.featurizer import mfcc_featurizer, table_features
from ssl_audio.probe.heads import pad_frames
from ssl_audio.probe.metrics import eer, trial_pairs
from ssl_audio.probe.stats_head import StatsPoolHead, masked_mean_std
from ssl_audio.probe.tasks import ProbeConfig, run_probe
from ssl_audio.probe.tasks.training import frame_stats

LENGTHS = (5, 2, 7)


def _rows(rng: np.random.Generator, k: int, d: int) -> list[np.ndarray]:
    return [rng.normal(3.0, 2.0, size=(k, n, d)).astype(np.float32) for n in LENGTHS]  # (K, T_i, D)


def test_masked_mean_std_ignores_padding() -> None:
    rng = np.random.default_rng(0)
    rows = [r[0] for r in _rows(rng, 1, 4)]  # (T_i, D)
    x = torch.full((3, 7, 4), 1e3)  # padding that would dominate any statistic it leaked into
    for b, row in enumerate(rows):
        x[b, : len(row)] = torch.from_numpy(row)
    pooled = masked_mean_std(x, torch.tensor(LENGTHS)).numpy()
    expected = np.stack([np.concatenate([r.astype(np.float64).mean(0), r.astype(np.float64).std(0)]) for r in rows])
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5)  # fp32 sums of <= 7 terms of ~10
    for bad in (torch.tensor([5, 0, 7]), torch.tensor([5, 2, 8]), torch.tensor([5, 2])):
        with pytest.raises(ValueError, match="masked_mean_std"):
            masked_mean_std(x, bad)


def test_weighted_layer_sum_then_stats_pooling_by_hand() -> None:
    rng = np.random.default_rng(1)
    rows = _rows(rng, 3, 4)  # K = 3
    mean, std = frame_stats(rows)
    head = StatsPoolHead(mean, std, num_outputs=2)
    logits = np.array([0.3, -1.2, 0.5])
    with torch.no_grad():
        head.mix.logits.copy_(torch.from_numpy(logits))
    x, lengths = pad_frames(rows)
    pooled = head.pooled(x, lengths).detach().numpy()

    w = np.exp(logits) / np.exp(logits).sum()
    assert head.mix.weights == pytest.approx(w.tolist(), rel=1e-6)
    frames = np.concatenate([r.astype(np.float64) for r in rows], axis=1)  # (K, all frames, D)
    mu, sd = frames.mean(axis=1), np.maximum(frames.std(axis=1), 1e-5)  # per layer and dimension
    for b, row in enumerate(rows):
        z = (row.astype(np.float64) - mu[:, None]) / sd[:, None]  # (K, T, D) standardised
        mixed = np.einsum("k,ktd->td", w, z)
        expected = np.concatenate([mixed.mean(0), mixed.std(0)])
        np.testing.assert_allclose(pooled[b], expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        logits_out = head(x, lengths)
    torch.testing.assert_close(logits_out, head.linear(torch.from_numpy(pooled)))


def test_classify_with_the_stats_head(noise_corpus: Path) -> None:
    clean = noise_corpus / "clean"
    cfg = ProbeConfig(task="classify", train=str(clean / "train.tsv"), test=str(clean / "test.tsv"), head="stats")
    results = run_probe(cfg, mfcc_featurizer(), cache_dir=noise_corpus / "cache")
    assert results["metrics"] == {"accuracy": 1.0, "macro_f1": 1.0}  # two tones a decade apart
    assert results["losses"][-1] < results["losses"][0] and results["probe"] == "layer 0"


def test_verify_with_the_stats_head_scores_stats_embeddings(noise_corpus: Path) -> None:
    """One layer: the embedding is the mean and std of the standardised frames; nothing is trained."""
    clean = noise_corpus / "clean"
    cfg = ProbeConfig(task="verify", train=str(clean / "train.tsv"), test=str(clean / "test.tsv"), head="stats")
    featurizer = mfcc_featurizer()
    results = run_probe(cfg, featurizer, cache_dir=noise_corpus / "cache")
    train = table_features(featurizer, read_table(cfg.train), cache_dir=noise_corpus / "cache")
    test_table = read_table(cfg.test)
    test = table_features(featurizer, test_table, cache_dir=noise_corpus / "cache")
    frames = np.concatenate([f[0].astype(np.float64) for f in train])  # (all frames, D)
    mu, sd = frames.mean(0), np.maximum(frames.std(0), 1e-5)

    def embed(f: np.ndarray) -> np.ndarray:
        z = (f[0].astype(np.float64) - mu) / sd
        return np.concatenate([z.mean(0), z.std(0)])

    e_train, e_test = np.stack([embed(f) for f in train]), np.stack([embed(f) for f in test])
    e_test = e_test - e_train.mean(0)
    unit = e_test / np.linalg.norm(e_test, axis=1, keepdims=True)
    i, j, targets = trial_pairs(test_table.column("speaker"))
    expected, _ = eer((unit[i] * unit[j]).sum(1), targets)
    assert results["metrics"]["eer"] == pytest.approx(expected, abs=1e-9)
    assert results["losses"] == [] and results["layer_weights"] is None
