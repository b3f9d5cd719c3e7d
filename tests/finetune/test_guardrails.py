"""Guardrails in a real (tiny) run: the too-long utterance is named and skipped, blank-only greedy output past
the unfreeze point warns once and is a TensorBoard scalar, and the best checkpoint is kept by CER."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from finetune_helpers import LONG_TRANSCRIPT, ft_overrides, write_corpus
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ssl_audio.train.loop as loop
from ssl_audio.finetune.targets import write_split_manifests
from ssl_audio.models.finetune import finetune_tiny, stuck_warning
from ssl_audio.train.config import load_config


def test_stuck_warning_rule() -> None:
    cfg = replace(finetune_tiny(), freeze_updates=10)
    assert stuck_warning(cfg, 50, {"blank_only": 1.0}, after=20) is not None
    assert stuck_warning(cfg, 15, {"blank_only": 1.0}, after=20) is None  # too early
    assert stuck_warning(cfg, 50, {"blank_only": 0.5}, after=20) is None  # some rows emit tokens
    assert stuck_warning(replace(cfg, head="classify"), 50, {"blank_only": 1.0}, after=20) is None


def test_tiny_run_guardrails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    cfg = load_config(
        None, ft_overrides(corpus, tmp_path / "run", "train.max_updates=4", "train.valid_every=2", "train.keep_last=1")
    )
    write_split_manifests(cfg.finetune, cfg.data.manifest_dir)
    family = loop.FAMILIES["finetune"]
    monkeypatch.setitem(
        loop.FAMILIES,
        "finetune",
        replace(family, stuck=lambda c, step, m, after: f"stuck at {step}" if step >= 3 else None),
    )
    with pytest.warns(UserWarning, match="stuck at 3"):
        result = loop.train(cfg)
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"skipping {corpus / 'audio' / 'train_00.wav'}" in log and str(len(LONG_TRANSCRIPT.strip())) in log
    assert log.count("WARNING: stuck at") == 1  # once
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/blank_only", "train/skipped_targets", "valid/cer", "valid/wer"} <= set(events.Tags()["scalars"])
    assert all(e.value <= 1 for e in events.Scalars("train/skipped_targets"))  # one utterance, in its batch only
    metas = {p.name: json.loads((p / "meta.json").read_text()) for p in (tmp_path / "run").glob("step_*")}
    cers = {name: meta["val_loss"] for name, meta in metas.items()}
    assert result.valid["cer"] == cers["step_00000004"]  # the CER is what ranks checkpoints
