"""Continued pretraining (`init.checkpoint`): weights only, fresh optimizer/step/schedule; architecture
mismatches refused with the parameter names, for init and for `--resume` alike; HuBERT heads reset on new k."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_helpers import assert_identical, config, hubert_overrides, wav2vec2_overrides

from ssl_audio import cli
from ssl_audio.train.checkpoint import load_checkpoint
from ssl_audio.train.loop import train

LR = 0.001


@pytest.fixture(scope="module")
def source(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wav2vec2 run of 2 updates; returns its run folder (holding step_00000002)."""
    run_dir = tmp_path_factory.mktemp("init_source")
    train(config(wav2vec2_overrides(corpus, run_dir, "train.max_updates=2")))
    return run_dir


@pytest.fixture(scope="module")
def hubert_source(corpus: Path, labels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HuBERT run of 1 update on 10 classes; returns its step folder."""
    run_dir = tmp_path_factory.mktemp("init_hubert_source")
    return train(config(hubert_overrides(corpus, run_dir, labels(10), "train.max_updates=1"))).checkpoint


def test_init_loads_weights_only(corpus: Path, source: Path, tmp_path: Path) -> None:
    init = source / "step_00000002"
    # max_updates=0 saves the starting point: the source's weights, no optimizer state, step 0.
    start = train(
        config(wav2vec2_overrides(corpus, tmp_path / "start", "train.max_updates=0", f"init.checkpoint={init}"))
    )
    assert start.step == 0 and start.checkpoint == tmp_path / "start" / "step_00000000"
    assert_identical(load_file(start.checkpoint / "model.safetensors"), load_file(init / "model.safetensors"))
    state = load_checkpoint(start.checkpoint).train_state
    assert (state["step"], state["skipped"], state["optimizer"]["state"]) == (0, 0, {})
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(LR / 2)  # warmup again: 1/2 of the peak

    result = train(
        config(wav2vec2_overrides(corpus, tmp_path / "more", "train.max_updates=1", f"init.checkpoint={init}"))
    )
    assert (result.step, len(result.losses)) == (1, 1)  # counted from 0, not from the source's 2
    state = load_checkpoint(result.checkpoint).train_state
    assert state["scheduler"]["last_epoch"] == 1
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {1}  # Adam's count restarted
    assert "resumed" not in (tmp_path / "more" / "train.log").read_text()


def test_init_without_rewarm_starts_at_the_peak(corpus: Path, source: Path, tmp_path: Path) -> None:
    overrides = ["train.max_updates=0", f"init.checkpoint={source / 'step_00000002'}", "init.rewarm=false"]
    result = train(config(wav2vec2_overrides(corpus, tmp_path, *overrides)))
    state = load_checkpoint(result.checkpoint).train_state
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(LR)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("model.config.encoder.num_layers=5", r"missing: encoder\.transformer\.layers\.4\.attention\.out\.bias"),
        ("model.config.encoder.num_layers=3", r"unexpected: encoder\.transformer\.layers\.3\.attention\.out\.bias"),
        ("model.config.encoder.dim=64", r"shape mismatch \(checkpoint vs model\): encoder\.projection\.linear\.bias "),
    ],
)
def test_init_into_another_architecture_is_refused(
    corpus: Path, source: Path, tmp_path: Path, change: str, expected: str
) -> None:
    init = source / "step_00000002"
    cfg = config(wav2vec2_overrides(corpus, tmp_path, "train.max_updates=0", f"init.checkpoint={init}", change))
    with pytest.raises(ValueError, match=rf"{init} does not fit this model's architecture; .*{expected}"):
        train(cfg)
    assert not list(tmp_path.glob("step_*"))


def test_reset_quantizer_allows_a_new_codebook(corpus: Path, source: Path, tmp_path: Path) -> None:
    init = source / "step_00000002"
    overrides = ["train.max_updates=0", f"init.checkpoint={init}", "model.config.quantizer.num_entries=32"]
    with pytest.raises(ValueError, match=r"quantizer\."):
        train(config(wav2vec2_overrides(corpus, tmp_path / "refused", *overrides)))
    result = train(config(wav2vec2_overrides(corpus, tmp_path / "reset", *overrides, "init.reset_quantizer=true")))
    loaded, before = load_file(result.checkpoint / "model.safetensors"), load_file(init / "model.safetensors")
    assert loaded["quantizer.codevectors"].shape[-2] != before["quantizer.codevectors"].shape[-2]
    assert_identical(
        {k: v for k, v in loaded.items() if k.startswith("encoder.")},
        {k: v for k, v in before.items() if k.startswith("encoder.")},
    )


def test_hubert_new_number_of_classes_needs_reset_heads(
    corpus: Path, labels, hubert_source: Path, tmp_path: Path
) -> None:
    overrides = [f"init.checkpoint={hubert_source}", "train.max_updates=0"]
    with pytest.raises(
        ValueError, match=r"shape mismatch \(checkpoint vs model\): label_embeddings \(10, 64\) vs \(20, 64\)"
    ):
        train(config(hubert_overrides(corpus, tmp_path / "refused", labels(20), *overrides)))

    start = train(config(hubert_overrides(corpus, tmp_path / "start", labels(20), *overrides, "init.reset_heads=true")))
    loaded, before = load_file(start.checkpoint / "model.safetensors"), load_file(hubert_source / "model.safetensors")
    assert loaded["label_embeddings"].shape == (20, 64)
    assert not torch.equal(loaded["final_proj.weight"], before["final_proj.weight"])  # a fresh head
    trunk = [k for k in before if not k.startswith(("final_proj.", "label_embeddings"))]
    assert trunk and all(torch.equal(loaded[k], before[k]) for k in trunk)

    more = hubert_overrides(corpus, tmp_path / "more", labels(20), f"init.checkpoint={hubert_source}")
    result = train(config([*more, "init.reset_heads=true", "train.max_updates=1"]))
    assert result.step == 1 and len(result.losses) == 1


@pytest.fixture
def copied_run(source: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    return run_dir


@pytest.mark.parametrize("resume", ["auto", "step"])
def test_resume_into_another_architecture_is_refused(
    corpus: Path, copied_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, resume: str
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    overrides = wav2vec2_overrides(corpus, copied_run, "train.max_updates=4", "model.config.encoder.num_layers=5")
    where = "auto" if resume == "auto" else str(copied_run / "step_00000002")
    assert cli.main(["pretrain", str(recipe), *overrides, "--resume", where]) == 2
    err = capsys.readouterr().err
    assert f"ssl-audio pretrain: error: {copied_run / 'step_00000002'} does not fit this model's architecture" in err
    assert "missing: encoder.transformer.layers.4." in err
    assert [p.name for p in copied_run.glob("step_*")] == ["step_00000002"]


def test_refused_resume_leaves_the_run_config_alone(corpus: Path, copied_run: Path) -> None:
    before = yaml.safe_load((copied_run / "config.yaml").read_text())["model"]
    overrides = wav2vec2_overrides(corpus, copied_run, "train.max_updates=4", "model.config.encoder.num_layers=5")
    with pytest.raises(ValueError, match="does not fit"):
        train(config(overrides), resume="auto")
    assert yaml.safe_load((copied_run / "config.yaml").read_text())["model"] == before  # not num_layers: 5


def test_resume_from_a_named_corrupt_checkpoint_is_a_clear_error(
    corpus: Path, copied_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    weights = copied_run / "step_00000002" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(100)
    overrides = wav2vec2_overrides(corpus, copied_run, "train.max_updates=4")
    assert cli.main(["pretrain", str(recipe), *overrides, "--resume", str(weights.parent)]) == 2
    assert f"ssl-audio pretrain: error: {weights}: truncated (100 of " in capsys.readouterr().err
