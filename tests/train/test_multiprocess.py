"""Two CPU processes (torchrun, gloo) train like one process with twice the micro-batches per update.

`accelerate launch --cpu --num_processes 2` starts a single process without an MPI host file (accelerate 1.15
simple launcher), so the two-process runs go through `python -m torch.distributed.run`.
With every dropout and layerdrop off, and masks/Gumbel noise drawn per (seed, update, first utterance), rank r
of update u sees global batch 2u + r, as micro-batch r of update u does in the one-process run: the weights
must agree to float tolerance (the summation order of the gradients may differ).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from train_helpers import assert_close, config, finish_child, start_child, wav2vec2_overrides

from ssl_audio.data.manifest import load_manifest
from ssl_audio.data.sampler import BucketBatchSampler
from ssl_audio.train.loop import train

pytestmark = pytest.mark.slow

UPDATES = 4
HALF = 2


class Runs:
    """Two processes stopping at update 2 then resuming to 4, and one process with 2 micro-batches per update."""

    batches_per_epoch = 0

    def __init__(self, corpus: Path, folder: Path) -> None:
        self.corpus, self.folder = corpus, folder
        self.two_dir, self.one_dir = folder / "two", folder / "one"
        common = (f"train.max_updates={UPDATES}", f"train.save_every={HALF}")
        two = start_child(
            wav2vec2_overrides(corpus, self.two_dir, *common, f"train.stop_at={HALF}"), folder / "two_a", processes=2
        )
        one = start_child(wav2vec2_overrides(corpus, self.one_dir, *common, "train.grad_accum=2"), folder / "one")
        self.first = finish_child(two, folder / "two_a", processes=2)
        self.one = finish_child(one, folder / "one")[0]
        resumed = start_child(
            wav2vec2_overrides(corpus, self.two_dir, *common), folder / "two_b", resume="auto", processes=2
        )
        self.resumed = finish_child(resumed, folder / "two_b", processes=2)


@pytest.fixture(scope="module")
def runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    # Rank r takes global batches r, r + 2, ...: the layouts match when one process's batch count is even.
    train_manifest = load_manifest(corpus / "manifest" / "train.tsv")
    cfg = config(wav2vec2_overrides(corpus, Path("unused")))
    lengths = [min(n, cfg.data.max_samples) for n in train_manifest.num_samples]
    batches = BucketBatchSampler(lengths, max_batch_seconds=cfg.data.max_batch_seconds, seed=cfg.seed).global_batches(0)
    assert len(batches) % 2 == 0 and len(batches) >= 2 * UPDATES
    runs = Runs(corpus, tmp_path_factory.mktemp("multiprocess"))
    runs.batches_per_epoch = len(batches)
    return runs


def test_two_processes_equal_one_process_with_doubled_batch(runs: Runs) -> None:
    # Error bound if the two layouts sum the gradients in another order (today they agree bit for bit: a + b is
    # commutative and the halving exact). A gradient then moves by ~1 ulp (rel 1e-7); Adam's step responds with
    # lr x 1e-7 x adam_eps / |g| at most, except where the gradient is pure rounding noise: the key bias (softmax
    # ignores a per-query constant) gets |g| ~ 5e-10, so lr 1e-3 x g / adam_eps 1e-6 = 5e-7 per update in a
    # direction the noise picks. 4 updates, two runs: < 4e-6, so atol 1e-5; a real update moves a weight by ~lr 1e-3.
    # The losses see the key bias only through rounding (~1e-7 rel) and the other weights through ~1e-10: rel 1e-6.
    two_losses = runs.first[0]["losses"] + runs.resumed[0]["losses"]
    assert two_losses == pytest.approx(runs.one["losses"], rel=1e-6)
    for step in (HALF, UPDATES):
        name = f"step_{step:08d}/model.safetensors"
        assert_close(load_file(runs.two_dir / name), load_file(runs.one_dir / name), atol=1e-5, rtol=1e-5)
    n = runs.batches_per_epoch
    two_log, one_log = (runs.two_dir / "train.log").read_text(), (runs.one_dir / "train.log").read_text()
    assert f"2 process(es), 1 micro-batch(es) per update, {n // 2} batches per epoch per process" in two_log
    assert f"1 process(es), 2 micro-batch(es) per update, {n} batches per epoch per process" in one_log


def test_ranks_hold_the_same_weights_and_resume_at_the_same_step(runs: Runs) -> None:
    for reports in (runs.first, runs.resumed):
        assert reports[0]["param_sha256"] == reports[1]["param_sha256"]
        assert reports[0]["losses"] == reports[1]["losses"]  # the loss is reduced over both ranks
    assert [(r["start"], r["step"]) for r in runs.first.values()] == [(0, HALF)] * 2
    assert [(r["start"], r["step"]) for r in runs.resumed.values()] == [(HALF, UPDATES)] * 2


def test_only_rank_0_writes(runs: Runs) -> None:
    assert (runs.first[0]["saved"], runs.first[1]["saved"]) == ([HALF], [])
    assert (runs.resumed[0]["saved"], runs.resumed[1]["saved"]) == ([UPDATES], [])
    assert len(list((runs.two_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per launch
    log = (runs.two_dir / "train.log").read_text()
    assert log.count("update 1: loss=") == 1 and log.count("saved ") == 2
    assert sorted(p.name for p in runs.two_dir.glob("step_*")) == ["step_00000002", "step_00000004"]


def test_resume_with_another_number_of_processes_is_refused(runs: Runs) -> None:
    cfg = config(wav2vec2_overrides(runs.corpus, runs.two_dir, f"train.max_updates={UPDATES + 2}"))
    with pytest.raises(ValueError, match=r"step_00000004: saved with 2 processes, resuming with 1"):
        train(cfg, resume="auto")
