"""Task records and the registry: each task's defaults, and a new task made of its module plus one registry entry.

Oracle for the defaults: the values the probe used before the records existed (HEADLINE, DEFAULT_COLUMN,
DEFAULT_EPOCHS, DEFAULT_LR and the layer rule of the old ssl_audio/probe/tasks.py), written out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.cli import main
from ssl_audio.data.probe_table import ProbeTable
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.driver import run_probe
from ssl_audio.probe.featurizer import Featurizer
from ssl_audio.probe.registry import TASK_MODULES, get_task, task_names
from ssl_audio.probe.task import Outcome, ProbeTask, Targets, no_feature_check
from ssl_audio.probe.tasks import ctc, frames

# name: (headline, default label column, epochs, lr, layer probed by default of 13 and of 5 layers)
DEFAULTS = {
    "classify": ("accuracy", None, 100, 1e-2, None, None),
    "verify": ("eer", "speaker", 100, 1e-2, 6, 2),  # no training: the middle transformer layer
    "ctc": ("cer", "transcript", 100, 1e-2, None, None),
    "frames": ("accuracy", None, 50, 1e-2, None, None),  # None: the weighted sum
    "noisy": ("auc", "snr_db", 100, 1e-2, None, None),
}


def test_registry_lists_the_tasks_in_the_order_of_the_help() -> None:
    assert task_names() == ("classify", "verify", "ctc", "frames", "noisy")
    with pytest.raises(ValueError, match=r"^unknown task 'asr'; expected one of classify, verify, ctc, frames, noisy$"):
        get_task("asr")


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_task_record_defaults(name: str) -> None:
    task = get_task(name)
    headline, column, epochs, lr, layer_of_13, layer_of_5 = DEFAULTS[name]
    assert (task.name, task.headline, task.label_column, task.epochs, task.lr) == (name, headline, column, epochs, lr)
    assert (task.default_layer(13), task.default_layer(5)) == (layer_of_13, layer_of_5)
    checks = {"ctc": ctc.check_lengths, "frames": frames.check_frame_counts}  # checked after encoding
    assert task.check_features is checks.get(name, no_feature_check)


# ---------------------------------------------------------------- a toy task: this module and one registry entry

HOP, WINDOW, LAYERS = 320, 400, 3
seen: list[dict] = []  # what the toy task's functions were given


def _rms_layers(segment: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
    """(S',) -> (T', K'): layer k of a frame is (k + 1) times its RMS."""
    rms = segment.unfold(0, WINDOW, HOP).pow(2).mean(dim=1).sqrt()
    return torch.stack([(k + 1) * rms for k in layers], dim=1)


def toy_targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    classes = tuple(sorted(set(train.column(cfg.label_column))))
    seen.append({"column": cfg.label_column})
    return Targets(column=cfg.label_column, names=classes, train=[], test=[], test_labels=test.column(cfg.label_column))


def toy_evaluate(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    seen.append({"epochs": cfg.epochs, "lr": cfg.lr, "shapes": [f.shape for f in test]})
    mean = float(np.concatenate([f.astype(np.float64).ravel() for f in test]).mean())
    return Outcome(metrics={"rms": mean, "classes": float(len(targets.names))})


def toy_check(
    targets: Targets, train_table: ProbeTable, train: list[np.ndarray], test_table: ProbeTable, test: list[np.ndarray],
    frame_rate: float,
) -> None:  # fmt: skip
    seen.append({"checked": (len(train), len(test), frame_rate)})


TASK = ProbeTask(
    name="toy",
    headline="rms",
    label_column="colour",
    epochs=7,
    lr=0.5,
    targets=toy_targets,
    evaluate=toy_evaluate,
    default_layer=lambda num_layers: num_layers - 1,  # the last layer
    check_features=toy_check,
)


def test_a_new_task_needs_only_its_module_and_one_registry_entry(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(TASK_MODULES, "toy", __name__)  # the one entry: this module holds TASK
    rng = np.random.default_rng(0)
    waves = {f"clip{i}.wav": 0.2 * rng.standard_normal(n) for i, n in enumerate((8000, 9600, 6400))}
    for name, wave in waves.items():
        sf.write(tmp_path / name, wave.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    (tmp_path / "train.tsv").write_text("path\tcolour\nclip0.wav\tred\nclip1.wav\tblue\n")
    (tmp_path / "test.tsv").write_text("path\tcolour\nclip1.wav\tblue\nclip2.wav\tred\n")
    featurizer = Featurizer(name="rms", ident="rms", frames_fn=_rms_layers, num_layers=LAYERS, dim=1, window=WINDOW,
                            hop=HOP)  # fmt: skip
    seen.clear()
    cfg = ProbeConfig(task="toy", train=str(tmp_path / "train.tsv"), test=str(tmp_path / "test.tsv"))
    results = run_probe(cfg, featurizer, cache_dir=tmp_path / "cache")

    # oracle: frame RMS in float64 from the files, times 3 (the last layer); float16 features cost 2^-11 relative
    frame_counts = [(len(waves[name]) - WINDOW) // HOP + 1 for name in ("clip1.wav", "clip2.wav")]
    rms = [
        np.sqrt((np.lib.stride_tricks.sliding_window_view(waves[name].astype(np.float32), WINDOW)[::HOP] ** 2).mean(1))
        for name in ("clip1.wav", "clip2.wav")
    ]
    assert [len(r) for r in rms] == frame_counts
    assert results["metrics"]["rms"] == pytest.approx(LAYERS * np.concatenate(rms).mean(), rel=2**-11 + 1e-5)
    assert results["metrics"]["classes"] == 2.0
    assert (results["task"], results["headline"], results["probe"]) == ("toy", "rms", "layer 2")
    assert results["label_column"] == "colour" and results["config"]["epochs"] is None  # as asked for
    assert seen == [
        {"column": "colour"},
        {"checked": (2, 2, SAMPLE_RATE / HOP)},
        {"epochs": 7, "lr": 0.5, "shapes": [(1, n, 1) for n in frame_counts]},
    ]

    # the command line offers the registered task too (MFCC: a single layer, so layer 0)
    out = tmp_path / "out"
    args = ["probe", "toy", "--baseline", "mfcc", "--train", str(tmp_path / "train.tsv"), "--out", str(out)]
    assert main([*args, "--test", str(tmp_path / "test.tsv"), "--epochs", "3", "--device", "cpu"]) == 0
    written = json.loads((out / "results.json").read_text())
    assert (written["task"], written["probe"], written["config"]["epochs"]) == ("toy", "layer 0", 3)
    assert seen[-1]["epochs"] == 3 and seen[-1]["lr"] == 0.5
