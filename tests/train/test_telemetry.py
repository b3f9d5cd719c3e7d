"""Telemetry: collapse and chance warnings, averaged TensorBoard scalars read back, the run's own scalars."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from accelerate.utils import is_wandb_available
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from train_helpers import config, hubert_overrides, wav2vec2_overrides

from ssl_audio.models.flops import training_flops
from ssl_audio.models.wav2vec2 import wav2vec2_tiny
from ssl_audio.train.loop import TrainResult, train, update_flops
from ssl_audio.train.scalars import per_frame
from ssl_audio.train.schedule import lr_multiplier
from ssl_audio.train.telemetry import Telemetry
from ssl_audio.train.trackers import check_trackers, hyperparameters


def telemetry(run_dir: Path, **changes) -> Telemetry:
    kwargs = dict(
        enabled=True, total_updates=100, start_update=0, log_every=1, chance=0.05, chance_warn_after=10,
        perplexity_floor=2.56,  # 0.02 * G * V with G=2, V=64
    )  # fmt: skip
    kwargs.update(changes)
    return Telemetry(run_dir, **kwargs)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_codebook_collapse_warns_once(tmp_path: Path) -> None:
    t = telemetry(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # healthy perplexity: no warning
        t.update(1, {"loss": 1.0, "code_perplexity": 40.0})
    with pytest.warns(UserWarning, match=r"update 2: code perplexity 1\.50 is below 2\.56: the codebook is collapsing"):
        t.update(2, {"loss": 1.0, "code_perplexity": 1.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per kind of trouble
        t.update(3, {"loss": 1.0, "code_perplexity": 1.0})
    t.close()
    log = (tmp_path / "train.log").read_text()
    assert log.count("WARNING: update 2: code perplexity 1.50") == 1 and "collapsing" in log


def test_collapse_is_judged_on_the_logged_average(tmp_path: Path) -> None:
    t = telemetry(tmp_path, log_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.update(1, {"code_perplexity": 1.0})  # not a logging step: not judged
        t.update(2, {"code_perplexity": 100.0})  # mean 50.5: healthy
    with pytest.warns(UserWarning, match="code perplexity 2.00 is below"):
        t.update(3, {"code_perplexity": 3.0})
        t.update(4, {"code_perplexity": 1.0})  # mean 2.0
    t.close()


def test_no_collapse_check_without_a_quantizer(tmp_path: Path) -> None:
    t = telemetry(tmp_path, perplexity_floor=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.update(1, {"code_perplexity": 0.0})
    t.close()


def test_accuracy_at_chance_warns_after_chance_warn_after(tmp_path: Path) -> None:
    t = telemetry(tmp_path, chance=0.05, chance_warn_after=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.update(9, {"accuracy": 0.05})  # too early to judge
        t.update(10, {"accuracy": 0.2})  # learning: 4x chance
    with pytest.warns(UserWarning, match=r"update 11: masked accuracy 0\.0700 is still near chance \(0\.0500\)"):
        t.update(11, {"accuracy": 0.07})  # within 1.5x chance
    t.close()
    assert "WARNING: update 11: masked accuracy" in (tmp_path / "train.log").read_text()


def test_tensorboard_scalars_are_averages_over_log_every(tmp_path: Path) -> None:
    t = telemetry(tmp_path, log_every=2)
    for step, loss in enumerate([1.0, 3.0, 5.0, 9.0], start=1):
        t.update(step, {"loss": loss, "lr": 1e-3})
    t.validation(4, {"loss": 0.5, "accuracy": 0.25})
    t.close()
    assert scalars(tmp_path, "train/loss") == [(2, 2.0), (4, 7.0)]
    assert scalars(tmp_path, "valid/loss") == [(4, 0.5)]
    assert scalars(tmp_path, "valid/accuracy") == [(4, 0.25)]
    log = (tmp_path / "train.log").read_text().splitlines()
    assert log == [
        "update 2: loss=2 lr=0.001",
        "update 4: loss=7 lr=0.001",
        "valid at update 4: accuracy=0.25 loss=0.5",
    ]


def test_disabled_telemetry_writes_nothing(tmp_path: Path) -> None:
    t = telemetry(tmp_path, enabled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.update(50, {"loss": 1.0, "code_perplexity": 0.0, "accuracy": 0.0})
        t.line("hello")
    t.close()
    assert list(tmp_path.iterdir()) == []


# -- a real run -----------------------------------------------------------------------------------------

MAX_UPDATES = 3
PEAK = 0.5  # TFLOP/s: train.peak_tflops, so the MFU is a known multiple of the achieved rate
LR = 0.001
WARMUP = 2


@pytest.fixture(scope="module")
def run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult]:
    run_dir = tmp_path_factory.mktemp("telemetry_run")
    cfg = config(wav2vec2_overrides(corpus, run_dir, f"train.max_updates={MAX_UPDATES}", f"train.peak_tflops={PEAK}"))
    assert (cfg.optim.lr, cfg.schedule.warmup_updates) == (LR, WARMUP)
    return run_dir, train(cfg)


def test_run_writes_its_losses_to_tensorboard(run: tuple[Path, TrainResult]) -> None:
    run_dir, result = run
    logged = scalars(run_dir, "train/loss")
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [value for _, value in logged] == pytest.approx(result.losses, rel=1e-6)  # float32 in the event file
    assert scalars(run_dir, "valid/loss") == [(3, pytest.approx(result.valid["loss"], rel=1e-6))]
    assert {step for step, _ in scalars(run_dir, "train/code_perplexity")} == {1, 2, 3}
    log = (run_dir / "train.log").read_text()
    assert (
        "parameters, 1 process(es)" in log and "update 3: loss=" in log and f"saved {run_dir / 'step_00000003'}" in log
    )


def test_logged_lr_is_the_rate_the_update_used(run: tuple[Path, TrainResult]) -> None:
    run_dir, _ = run
    cfg = config(["schedule.warmup_updates=2"])
    used = [LR * lr_multiplier(s, MAX_UPDATES, cfg.schedule) for s in range(MAX_UPDATES)]  # 5e-4, 1e-3, 1e-3 ...
    assert [value for _, value in scalars(run_dir, "train/lr")] == pytest.approx(used, rel=1e-6)


def test_run_logs_throughput_and_mfu_against_the_given_peak(run: tuple[Path, TrainResult]) -> None:
    run_dir, result = run
    rates, mfus = scalars(run_dir, "train/tflops_per_second"), scalars(run_dir, "train/mfu")
    assert [step for step, _ in mfus] == [1, 2, 3] and all(rate > 0 for _, rate in rates)
    for (_, rate), (_, mfu) in zip(rates, mfus):
        assert mfu == pytest.approx(rate / PEAK, rel=1e-6)  # one process: achieved over the peak
    assert (
        result.mfu == pytest.approx(result.tflops_per_second / PEAK, rel=1e-12) and result.audio_seconds_per_second > 0
    )
    assert "MFU against 0.5 TFLOP/s per process (train.peak_tflops)" in (run_dir / "train.log").read_text()


def test_update_flops_are_the_analytic_training_flops() -> None:
    cfg = wav2vec2_tiny()
    lengths = [16_000, 23_456, 40_000]
    got = update_flops(cfg, lengths, torch.tensor(57))
    assert float(got) == pytest.approx(training_flops(cfg, lengths, masked_frames=57), rel=1e-6)  # float32 tensor


def test_loss_terms_are_per_frame_and_add_up_to_the_loss(run: tuple[Path, TrainResult]) -> None:
    """Every loss scalar has the loss's unit, nats per predicted frame (scalars.py): the terms sum to `loss`."""
    run_dir, _ = run
    loss = scalars(run_dir, "train/loss")
    terms = [scalars(run_dir, f"train/loss_{name}") for name in ("contrastive", "diversity", "penalty")]
    for i, (step, value) in enumerate(loss):
        assert sum(term[i][1] for term in terms) == pytest.approx(value, rel=1e-5)  # 3 float32 values and a sum
        assert all(term[i][0] == step for term in terms)
    # The contrastive term per frame is at most log(1 + K) nats (uniform over the target and K distractors) plus
    # what training can add in 3 updates: far below a per-batch sum (hundreds of frames times that).
    assert all(0 < value < 2 * math.log(1 + wav2vec2_tiny().num_negatives) for _, value in terms[0])


def test_per_frame_hand_values() -> None:
    # An update of 2 micro-batches on 2 processes predicting 12 + 8 frames; summed terms 30, 6 and 4 nats.
    assert per_frame({"contrastive": 30.0, "diversity": 6.0, "penalty": 4.0}, 20.0) == {
        "loss_contrastive": 1.5, "loss_diversity": 0.3, "loss_penalty": 0.2,
    }  # fmt: skip
    assert per_frame({"masked_0": 3.0}, 0.0) == {"loss_masked_0": 3.0}  # no frames: the loss's own clamp to 1


def test_resolved_config_is_logged_as_hyperparameters(run: tuple[Path, TrainResult]) -> None:
    run_dir, _ = run
    # add_hparams writes a sub-run (accelerate also a hparams.yml in a folder of its own)
    [folder] = [p.parent for p in (run_dir / "tensorboard").glob("*/events.out.tfevents.*")]
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert logged["optim.lr"].number_value == LR
    assert logged["train.max_updates"].number_value == MAX_UPDATES
    assert logged["model.family"].string_value == "wav2vec2"
    assert logged["optim.betas"].string_value == "[0.9, 0.98]"
    assert logged["model.config.encoder.num_layers"].number_value == wav2vec2_tiny().encoder.num_layers  # resolved
    assert "init.checkpoint" not in logged  # None: no tracker types it


def test_hyperparameters_flatten_to_dotted_scalars() -> None:
    nested = {"a": 1, "b": {"c": 0.5, "d": {"e": "x", "f": None}}, "g": [1, 2], "h": True}
    assert hyperparameters(nested) == {"a": 1, "b.c": 0.5, "b.d.e": "x", "g": "[1, 2]", "h": True}


def test_unknown_and_missing_trackers_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"train\.log_with: 'neptune' is not one of \['tensorboard', 'wandb', 'mlflow'\]"
    ):
        config(["train.log_with=[neptune]"])
    if not is_wandb_available():
        with pytest.raises(ValueError, match=r"^train\.log_with: wandb is not installed \(pip install wandb\)"):
            check_trackers(["tensorboard", "wandb"])
    check_trackers(["tensorboard"])


def test_no_trackers_still_write_the_text_log(tmp_path: Path) -> None:
    t = telemetry(tmp_path, log_with=())
    t.update(1, {"loss": 2.0})
    t.close()
    assert (tmp_path / "train.log").read_text() == "update 1: loss=2\n" and not (tmp_path / "tensorboard").exists()


def test_hubert_terms_per_frame_on_headerless_km_labels(corpus: Path, labels, tmp_path: Path) -> None:
    """HuBERT trained from fairseq-style .km files (no header; data.label_rate): `loss_masked_0` (a per-batch sum
    before) is per predicted frame, near log(k) for random labels, and with `loss_penalty` adds up to `loss`."""
    k = 20
    km = []
    for path in labels(k):  # our files without their header line: fairseq's layout
        lines = Path(path).read_text().splitlines(keepends=True)[1:]
        (tmp_path / Path(path).name).write_text("".join(lines))
        km.append(str(tmp_path / Path(path).name))
    run_dir = tmp_path / "run"
    overrides = hubert_overrides(corpus, run_dir, (km[0], km[1]), "train.max_updates=2", "data.label_rate=50")
    train(config(overrides))
    loss, masked, penalty = (scalars(run_dir, f"train/{key}") for key in ("loss", "loss_masked_0", "loss_penalty"))
    assert [step for step, _ in loss] == [1, 2]
    for (_, total), (_, a), (_, b) in zip(loss, masked, penalty):
        assert a + b == pytest.approx(total, rel=1e-5)
        assert 0.5 * math.log(k) < a < 3 * math.log(k)  # a per-batch sum would be hundreds of frames times this
