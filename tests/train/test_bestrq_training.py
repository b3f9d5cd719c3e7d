"""BEST-RQ through the one loop: a tiny run's loss falls, and a run stopped and resumed ends bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import TINY, assert_identical, config, final_params

from ssl_audio.models.bestrq import RandomProjectionQuantizer, bestrq_tiny
from ssl_audio.train.loop import train

pytestmark = pytest.mark.slow  # three short runs: about 10-15 s on 2 shared cores

UPDATES = 12


def overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        "model.family=bestrq",
        f"data.manifest_dir={corpus / 'manifest'}",
        f"run_dir={run_dir}",
        f"train.max_updates={UPDATES}",
        "optim.lr=0.003",
        *extra,
    ]


def test_loss_falls_and_resume_is_exact(corpus: Path, tmp_path: Path) -> None:
    straight = train(config(overrides(corpus, tmp_path / "straight")))
    assert straight.step == UPDATES and len(straight.losses) == UPDATES
    first, last = sum(straight.losses[:3]) / 3, sum(straight.losses[-3:]) / 3
    assert last < first - 0.2, straight.losses  # measured: 5.96 -> 5.60 (ln 256 = 5.55 plus the penalty)

    stopped = overrides(corpus, tmp_path / "stopped", "train.stop_at=5")
    assert train(config(stopped)).step == 5
    resumed = train(config(overrides(corpus, tmp_path / "stopped")), resume="auto")
    assert resumed.step == UPDATES
    assert resumed.losses == straight.losses[5:]  # the same batches, masks and targets after the resume
    assert_identical(final_params(tmp_path / "stopped"), final_params(tmp_path / "straight"))
    # the frozen quantiser is saved and never moves: the checkpoint holds the one its seed draws
    params = final_params(tmp_path / "straight")
    fresh = RandomProjectionQuantizer(2 * 80, bestrq_tiny())
    assert_identical({k: params[f"quantizer.{k}"] for k in ("projection", "codebooks")}, fresh.state_dict())
