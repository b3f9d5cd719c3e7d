"""Where a run stops and where a resumed loader starts (in-process, fast)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState
from train_helpers import config, wav2vec2_overrides

from ssl_audio.data.loader import make_file_loader
from ssl_audio.data.manifest import load_manifest
from ssl_audio.train.loop import train


def test_stop_at_ends_the_call_with_a_checkpoint(corpus: Path, tmp_path: Path) -> None:
    result = train(config(wav2vec2_overrides(corpus, tmp_path, "train.max_updates=4", "train.stop_at=2")))
    assert (result.step, len(result.losses), result.checkpoint) == (2, 2, tmp_path / "step_00000002")
    assert "valid at update 2" in (tmp_path / "train.log").read_text()  # a stop validates like the end


def test_resume_at_stop_at_does_not_train_further(corpus: Path, tmp_path: Path) -> None:
    overrides = wav2vec2_overrides(corpus, tmp_path, "train.max_updates=4", "train.stop_at=2")
    train(config(overrides))
    again = train(config(overrides), resume="auto")  # e.g. a retried job of a chunked schedule
    assert (again.step, again.losses) == (2, [])


@pytest.mark.parametrize(
    "workers",
    [0, 2],
)
def test_resumed_loader_yields_the_rest_of_the_epoch(corpus: Path, workers: int) -> None:
    manifest = load_manifest(corpus / "manifest" / "train.tsv")

    def loader():
        return make_file_loader(
            manifest, max_samples=20000, random_crop=True, max_batch_seconds=3.0, seed=3, num_workers=workers
        )

    full = [batch.indices.tolist() for batch in loader()]
    first = loader()
    batches = iter(first)
    for _ in range(3):
        next(batches)
    state = first.state_dict()
    assert state["position"] == 3  # batches received, whatever the workers prefetched
    del batches
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [batch.indices.tolist() for batch in resumed]
    assert rest == full[3:]
    assert resumed.state_dict()["position"] == len(full)


@pytest.mark.parametrize("units, warns", [([], True), (["amx_bf16"], False)])
def test_bf16_on_a_cpu_without_bf16_units_warns(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, units: list[str], warns: bool
) -> None:
    monkeypatch.setattr("ssl_audio.train.loop.bf16_units", lambda: units)
    overrides = wav2vec2_overrides(corpus, tmp_path, "train.max_updates=1", "train.precision=bf16")
    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate keeps one precision per process
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(config(overrides))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # the next in-process run picks its own
    assert any("without bf16 matrix units" in str(w.message) for w in caught) == warns
