"""Training from tar shards (data.shard_dir): the same loop, and a resumed run equals a straight one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from train_helpers import assert_identical, config, final_params, hubert_overrides, wav2vec2_overrides

from ssl_audio.data.shards import pack_shards
from ssl_audio.train.loop import train


@pytest.fixture(scope="module")
def label_files(labels) -> tuple[str, str]:  # noqa: ANN001 (the conftest's factory)
    return labels(10)


@pytest.fixture(scope="module")
def shards(corpus: Path, label_files: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    pack_shards(corpus / "manifest" / "train.tsv", out, shard_seconds=20.0, labels=[label_files[0]])
    return out


@pytest.mark.slow
def test_wav2vec2_trains_from_shards_and_resumes_exactly(corpus: Path, shards: Path, tmp_path: Path) -> None:
    def run(run_dir: Path, *extra: str) -> None:
        train(config(wav2vec2_overrides(corpus, run_dir, f"data.shard_dir={shards}", "train.max_updates=4", *extra)))

    run(tmp_path / "straight")
    run(tmp_path / "resumed", "train.stop_at=2")
    result = train(
        config(wav2vec2_overrides(corpus, tmp_path / "resumed", f"data.shard_dir={shards}", "train.max_updates=4")),
        resume="auto",
    )
    assert result.step == 4 and all(math.isfinite(x) for x in result.losses)
    assert_identical(final_params(tmp_path / "resumed"), final_params(tmp_path / "straight"))


def test_hubert_takes_its_packed_labels(
    corpus: Path, shards: Path, label_files: tuple[str, str], tmp_path: Path
) -> None:
    cfg = config(hubert_overrides(corpus, tmp_path, label_files, f"data.shard_dir={shards}", "train.max_updates=2"))
    result = train(cfg)
    assert result.step == 2 and all(math.isfinite(x) for x in result.losses)
