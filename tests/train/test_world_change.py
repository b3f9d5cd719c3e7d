"""A run with train.target_seconds_per_update resumes on another number of processes (torchrun, gloo, CPU).

6 s of audio per update over 3 s batches: 2 processes x 1 micro-batch or 1 process x 2, so an update takes two
global batches either way and an epoch of the 27-clip corpus is 7 updates. The resumed run must train exactly the
batches the old ranks had left, in global order (data/sampler.py): over the epoch, every manifest row once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from train_helpers import config, finish_child, start_child, wav2vec2_overrides

from ssl_audio.data.manifest import load_manifest
from ssl_audio.data.sampler import BucketBatchSampler

pytestmark = pytest.mark.slow

SETTINGS = ("train.target_seconds_per_update=6.0", "train.max_epochs=1", "train.max_updates=100")


class Runs:
    """2 processes to update 3, then 1 process to the end; 1 process to update 2, then 2 processes to the end."""

    def __init__(self, corpus: Path, folder: Path) -> None:
        self.two_one, self.one_two = folder / "two_one", folder / "one_two"
        first_two = start_child(
            wav2vec2_overrides(corpus, self.two_one, *SETTINGS, "train.stop_at=3"), folder / "a", processes=2
        )
        first_one = start_child(wav2vec2_overrides(corpus, self.one_two, *SETTINGS, "train.stop_at=2"), folder / "c")
        self.a = finish_child(first_two, folder / "a", processes=2)
        self.c = finish_child(first_one, folder / "c")
        then_one = start_child(wav2vec2_overrides(corpus, self.two_one, *SETTINGS), folder / "b", resume="auto")
        then_two = start_child(
            wav2vec2_overrides(corpus, self.one_two, *SETTINGS), folder / "d", resume="auto", processes=2
        )
        self.b = finish_child(then_one, folder / "b")
        self.d = finish_child(then_two, folder / "d", processes=2)


@pytest.fixture(scope="module")
def runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(corpus, tmp_path_factory.mktemp("world_change"))


@pytest.fixture(scope="module")
def global_batches(corpus: Path) -> dict[int, list[list[int]]]:
    """Epoch 0's global batch list for 1 and 2 processes (14 batches: already even, so the same list)."""
    cfg = config(wav2vec2_overrides(corpus, Path("unused")))
    lengths = [min(n, cfg.data.max_samples) for n in load_manifest(corpus / "manifest" / "train.tsv").num_samples]
    found = {}
    for world in (1, 2):
        sampler = BucketBatchSampler(
            lengths, max_batch_seconds=cfg.data.max_batch_seconds, seed=cfg.seed, world_size=world
        )
        found[world] = sampler.global_batches(0)
    assert len(found[1]) == 14
    return found


def rows(*reports: dict[int, dict]) -> Counter:
    return Counter(
        row for report in reports for rank in report.values() for batch in rank["trained_rows"] for row in batch
    )


def test_two_to_one_process_trains_what_was_left(runs: Runs, global_batches) -> None:
    assert [(r["start"], r["step"]) for r in runs.a.values()] == [(0, 3), (0, 3)]
    assert (runs.b[0]["start"], runs.b[0]["step"]) == (3, 7)  # the epoch, and so the run, finished
    assert runs.b[0]["trained_rows"] == global_batches[2][6:]  # ranks 0 and 1 took batches 0-5
    assert rows(runs.a, runs.b) == Counter(range(27))
    log = (runs.two_one / "train.log").read_text()
    assert "resume: 2 -> 1 process(es), 1 -> 2 micro-batch(es) per update" in log
    assert sorted(p.name for p in runs.two_one.glob("step_*"))[-1] == "step_00000007"


def test_one_to_two_processes_trains_what_was_left(runs: Runs, global_batches) -> None:
    assert (runs.c[0]["start"], runs.c[0]["step"]) == (0, 2)
    assert [(r["start"], r["step"]) for r in runs.d.values()] == [(2, 7), (2, 7)]
    left = global_batches[1][4:]  # 10 batches: already a multiple of 2, so rank r takes left[r::2]
    assert [runs.d[r]["trained_rows"] for r in (0, 1)] == [left[0::2], left[1::2]]
    assert rows(runs.c, runs.d) == Counter(range(27))
    assert runs.d[0]["param_sha256"] == runs.d[1]["param_sha256"]
    assert "resume: 1 -> 2 process(es), 2 -> 1 micro-batch(es) per update" in (runs.one_two / "train.log").read_text()
