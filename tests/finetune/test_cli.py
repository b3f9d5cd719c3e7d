"""`ssl-audio finetune` then `ssl-audio transcribe` / `ssl-audio classify` on the tiny fixture corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from finetune_helpers import KEYWORDS, ft_overrides, write_corpus

from ssl_audio import cli
from ssl_audio.data.manifest import load_split


@pytest.mark.parametrize("task", ["transcribe", "classify"])
def test_finetune_then_use(task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus", train=4, valid=2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  max_updates: 2\n")
    extra = (
        [] if task == "transcribe" else ["finetune.kind=label", "finetune.column=keyword", "model.config.head=classify"]
    )
    args = ["finetune", str(recipe), *ft_overrides(corpus, tmp_path / "run"), *extra]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "finetune: 2 updates (0 skipped)" in out
    assert ("cer" in out) == (task == "transcribe") and ("accuracy" in out) == (task == "classify")
    assert len(load_split(corpus / "manifest", "train")) == 4
    files = [str(corpus / "audio" / "valid_00.wav"), str(corpus / "audio" / "valid_01.wav")]
    assert cli.main([task, str(tmp_path / "run" / "step_00000002"), *files]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert [line.partition("\t")[0] for line in lines] == files
    if task == "classify":  # one of the keywords with its probability
        assert all(line.partition("\t")[2].split()[0] in KEYWORDS for line in lines)
    else:  # letters of the corpus' words (or nothing, after 2 updates)
        assert all(set(line.partition("\t")[2]) <= set("ABC ") for line in lines)
    wrong = "classify" if task == "transcribe" else "transcribe"
    assert cli.main([wrong, str(tmp_path / "run" / "step_00000002"), files[0]]) == 2
    assert f"use `ssl-audio {task}`" in capsys.readouterr().err


def test_finetune_refuses_a_pretraining_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  family: hubert\n")
    assert cli.main(["finetune", str(recipe)]) == 2
    assert "model.family: finetune" in capsys.readouterr().err
