"""The noisy task (was noise added to this clip?) and the layer-wise analysis around it: its metrics against
sklearn and hand cases, the protocol end to end, per-layer results against single-layer runs, and the figure of
several runs' per-layer curves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, roc_auc_score

from ssl_audio.cli import main
from ssl_audio.probe.featurizer import checkpoint_featurizer, mfcc_featurizer
from ssl_audio.probe.layer_plot import COLOURS, LEGEND_ROW, PLOT_SIZE
from ssl_audio.probe.metrics import accuracy
from ssl_audio.probe.task import Targets
from ssl_audio.probe.tasks import ProbeConfig, run_probe
from ssl_audio.probe.tasks.noisy import CLASSES, evaluate, roc_auc

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "hubert" / "step_00000001"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=200)
    scores = rng.integers(0, 12, size=200) + 0.7 * targets  # many ties, within and across the classes
    assert roc_auc(scores, targets) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75  # sklearn's doc example


def _targets(test: list[int]) -> Targets:
    return Targets(column="snr_db", names=CLASSES, train=[0, 0, 0, 1, 1, 1], test=test, test_labels=[])


def test_evaluate_on_hand_made_features() -> None:
    rng = np.random.default_rng(0)
    clean = [rng.normal(0.0, 1.0, size=(1, 20, 3)).astype(np.float32) for _ in range(6)]
    noisy = [f + 5.0 for f in clean]  # a constant offset: separable by the mean alone
    cfg = ProbeConfig(task="noisy", train="a", test="b", label_column="snr_db", epochs=100, lr=1e-2)
    test_y = [0, 1, 1, 0, 1]
    test = [clean[0] + 0.1, noisy[1] + 0.1, noisy[2] - 0.1, clean[3] - 0.1, noisy[4]]
    out = evaluate(cfg, clean[:3] + noisy[3:], test, _targets(test_y), torch.device("cpu"))
    assert out.metrics == {"accuracy": 1.0, "auc": 1.0}
    assert out.details == {"test_noisy": 3, "test_clean": 2}
    # identical features for both classes: one score for all, so AUC 0.5 exactly; every clip gets one class
    same = [clean[0]] * 6
    out = evaluate(cfg, same, [clean[0]] * 5, _targets(test_y), torch.device("cpu"))
    assert out.metrics["auc"] == 0.5 and out.metrics["accuracy"] in (0.4, 0.6)
    out = evaluate(cfg, clean[:3] + noisy[3:], test[1:3], _targets([1, 1]), torch.device("cpu"))
    assert out.metrics == {"accuracy": 1.0}  # one condition only: no AUC, the share detected


def test_noisy_probe_end_to_end_with_mfcc(noise_corpus: Path, tmp_path: Path) -> None:
    """Multi-condition training table, test table of every condition, the statistics head (on 6 clean clips the
    linear head ranks well, AUC 0.89, but its threshold calls every test clip clean)."""
    snr = noise_corpus / "snr"
    cfg = ProbeConfig(
        task="noisy", train=str(snr / "train_snr.tsv"), test=str(snr / "test_snr.tsv"), by_snr=True, head="stats"
    )
    results = run_probe(cfg, mfcc_featurizer(), cache_dir=noise_corpus / "cache")
    assert results["label_column"] == "snr_db" and results["headline"] == "auc"
    assert results["details"] == {"test_noisy": 16, "test_clean": 4}
    buckets = {b["bucket"]: b["metrics"] for b in results["by_snr"]}
    assert list(buckets) == ["clean", "20dB", "10dB", "5dB", "0dB"]
    assert all(set(m) == {"accuracy"} for m in buckets.values())  # one condition per bucket: no AUC
    # the whole test set's accuracy is the row-weighted mean of the buckets' (4 rows each)
    assert results["metrics"]["accuracy"] == pytest.approx(np.mean([m["accuracy"] for m in buckets.values()]))
    assert buckets["0dB"]["accuracy"] >= 0.75 and buckets["clean"]["accuracy"] >= 0.75  # measured: 1.0 and 1.0
    assert results["metrics"]["auc"] > 0.8  # measured 0.95


def test_a_table_of_one_condition_is_refused(noise_corpus: Path) -> None:
    snr = noise_corpus / "snr"
    cfg = ProbeConfig(task="noisy", train=str(snr / "snr0" / "train.tsv"), test=str(snr / "test_snr.tsv"))
    with pytest.raises(ValueError, match=r"train\.tsv: every row is noisy; the noisy task needs clean and noisy"):
        run_probe(cfg, mfcc_featurizer())
    cfg = ProbeConfig(task="noisy", train=str(noise_corpus / "clean" / "train.tsv"), test=str(snr / "test_snr.tsv"))
    with pytest.raises(ValueError, match=r"no column 'snr_db'"):
        run_probe(cfg, mfcc_featurizer())


@pytest.mark.parametrize("head", ["linear", "stats"])
def test_all_layers_in_order_equal_single_layer_runs(noise_corpus: Path, tmp_path: Path, head: str) -> None:
    """An encoder's layers 0 (the transformer input) .. L, each as its own run with --layer would score it."""
    snr = noise_corpus / "snr"
    featurizer = checkpoint_featurizer(FIXTURE)  # 1 transformer layer: layers 0 and 1
    base = dict(task="noisy", train=str(snr / "train_snr.tsv"), test=str(snr / "test_snr.tsv"), epochs=30, head=head)
    results = run_probe(ProbeConfig(**base, all_layers=True), featurizer, cache_dir=tmp_path)
    assert results["num_layers"] == 2 and results["probe"] == "weighted"
    assert [p["layer"] for p in results["per_layer"]] == [0, 1]
    assert len(results["layer_weights"]) == 2
    for p in results["per_layer"]:
        alone = run_probe(ProbeConfig(**base, layer=p["layer"]), featurizer, cache_dir=tmp_path)
        assert p["metrics"] == alone["metrics"] and alone["probe"] == f"layer {p['layer']}"
        assert set(p["metrics"]) == {"accuracy", "auc"}


def test_cli_noisy_all_layers_then_one_figure_of_two_runs(
    noise_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    snr = noise_corpus / "snr"
    runs = []
    for name, source in (("trained", ["--checkpoint", str(FIXTURE)]), ("random", ["--baseline", "random"])):
        out = tmp_path / name
        args = ["probe", "noisy", *source, "--train", str(snr / "train_snr.tsv"), "--test", str(snr / "test_snr.tsv")]
        if name == "random":
            args += ["--checkpoint", str(FIXTURE)]
        assert main([*args, "--all-layers", "--epochs", "10", "--out", str(out), "--cache", str(tmp_path / "c")]) == 0
        results = json.loads((out / "results.json").read_text())
        assert [p["layer"] for p in results["per_layer"]] == [0, 1]
        assert Image.open(out / "layers.png").size == PLOT_SIZE
        runs.append(str(out))
    figure = tmp_path / "noisy_layers.png"
    assert main(["probe-layers", *runs, "--out", str(figure)]) == 0
    image = np.asarray(Image.open(figure).convert("RGB"))
    assert image.shape == (PLOT_SIZE[1] + 2 * LEGEND_ROW + 6, PLOT_SIZE[0], 3)  # a legend row per run
    for colour in COLOURS[:2]:
        assert np.all(image == colour, axis=-1).sum() > 50  # each run's curve is drawn
    assert not np.all(image == COLOURS[2], axis=-1).any()
    capsys.readouterr()
    assert main(["probe-layers", *runs, "--out", str(figure), "--metric", "eer"]) == 2
    assert "no metric 'eer' per layer (accuracy, auc)" in capsys.readouterr().err


def test_accuracy_oracle_is_sklearn() -> None:
    """The task's accuracy is ssl_audio.probe.metrics.accuracy: the same as sklearn's on the argmax."""
    y, p = np.array([0, 1, 1, 0, 1, 1]), np.array([0, 1, 0, 0, 1, 0])
    assert accuracy(y, p) == accuracy_score(y, p)
