"""Exact resume, in child processes running `ssl-audio pretrain`: an interrupted run ends bit-identical to an
uninterrupted one, whether it stopped cleanly (`train.stop_at`), was SIGKILLed mid-run, or SIGKILLed mid-save.

The runs use an 8-utterance manifest (4 batches per epoch), so 6 updates cross an epoch boundary. The clean
stop at update 3 runs with 2 DataLoader workers prefetching ahead and resumes mid-epoch (without workers, and
with workers too); the run killed mid-run resumes at update 2 (or 4); the run killed while saving update 6
resumes at the end of epoch 0 (update 4). The first leg of every scenario and the straight run start together
(module fixture), so the children share the 2 cores.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from train_helpers import (
    assert_identical,
    config,
    final_params,
    finish_child,
    pretrain,
    start_child,
    step_folders,
    wav2vec2_overrides,
)

from ssl_audio.data.manifest import load_manifest, write_manifest
from ssl_audio.data.sampler import BucketBatchSampler
from ssl_audio.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

UPDATES = 6
BATCHES_PER_EPOCH = 4
WORKERS = "data.num_workers=2"


def overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return wav2vec2_overrides(corpus, run_dir, f"train.max_updates={UPDATES}", "train.save_every=2", *extra)


class KillWhen:
    """SIGKILL a child as soon as `condition` holds, watched by a thread (polls every 10 ms)."""

    def __init__(self, proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 300) -> None:
        self.proc, self.condition, self.timeout = proc, condition, timeout
        self.error: str | None = None
        self.output = ""
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.condition():
            if self.proc.poll() is not None:
                self.error = f"child ended ({self.proc.returncode}) before it could be killed"
                break
            if time.monotonic() > deadline:
                self.error = f"condition not reached in {self.timeout} s"
                self.proc.kill()
                break
            time.sleep(0.01)
        else:
            self.proc.send_signal(signal.SIGKILL)
        self.output = self.proc.communicate()[0]

    def wait(self) -> None:
        self.thread.join()
        assert self.error is None, f"{self.error}:\n{self.output[-6000:]}"
        assert self.proc.returncode == -signal.SIGKILL


class Runs:
    """First legs: the straight run, a run stopping at update 3, and two runs that get SIGKILLed."""

    def __init__(self, corpus: Path, folder: Path) -> None:
        self.corpus, self.folder = corpus, folder
        self.straight_dir = folder / "straight"
        self.straight = start_child(overrides(corpus, self.straight_dir), folder / "straight_reports")
        self.stopped_dir = folder / "stopped"
        self.stopped = start_child(
            overrides(corpus, self.stopped_dir, "train.stop_at=3", WORKERS), folder / "stopped_reports"
        )

        self.mid_run_dir = folder / "mid_run"
        proc = start_child(overrides(corpus, self.mid_run_dir), folder / "mid_run_reports")
        self.mid_run = KillWhen(proc, (self.mid_run_dir / "step_00000002").is_dir)  # first checkpoint complete

        self.mid_save_dir, self.ready = folder / "mid_save", folder / "saving_step_6"
        self.partial = self.mid_save_dir / ".step_00000006.tmp"
        proc = start_child(
            overrides(corpus, self.mid_save_dir), folder / "mid_save_reports",
            SLOW_SAVE_STEP="6", SLOW_SAVE_READY=str(self.ready),
        )  # fmt: skip
        self.partial_files: list[str] = []

        def at_step_6_files_written() -> bool:  # pretrain_child.py holds the save before meta.json and the rename
            if not self.ready.exists():
                return False
            self.partial_files = sorted(p.name for p in self.partial.iterdir())
            return True

        self.mid_save = KillWhen(proc, at_step_6_files_written)
        self._straight: dict | None = None
        self._stopped: dict | None = None

    @property
    def stopped_report(self) -> dict:
        if self._stopped is None:
            self._stopped = finish_child(self.stopped, self.folder / "stopped_reports")[0]
        return self._stopped

    @property
    def straight_report(self) -> dict:
        if self._straight is None:
            self._straight = finish_child(self.straight, self.folder / "straight_reports")[0]
        return self._straight

    def close(self) -> None:
        for proc in (self.straight, self.stopped, self.mid_run.proc, self.mid_save.proc):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("resume")
    train = load_manifest(corpus / "manifest" / "train.tsv")  # its first 8 rows: 4 batches per epoch
    (folder / "manifest").mkdir()
    write_manifest(folder / "manifest" / "train.tsv", train.root, list(zip(train.paths[:8], train.num_samples[:8])))
    (folder / "manifest" / "valid.tsv").write_text((corpus / "manifest" / "valid.tsv").read_text())
    data = config(overrides(folder, folder)).data
    lengths = [min(n, data.max_samples) for n in train.num_samples[:8]]
    batches = BucketBatchSampler(lengths, max_batch_seconds=data.max_batch_seconds)
    assert len(batches) == BATCHES_PER_EPOCH, "the scenarios assume 4 batches per epoch"
    runs = Runs(folder, folder)
    yield runs
    runs.close()


def test_straight_run_crosses_an_epoch(runs: Runs) -> None:
    report = runs.straight_report
    assert (report["start"], report["step"], len(report["losses"]), report["saved"]) == (0, 6, 6, [2, 4, 6])
    assert f"{BATCHES_PER_EPOCH} batches per epoch per process" in (runs.straight_dir / "train.log").read_text()


def resume_stopped_copy(runs: Runs, folder: Path, *extra: str) -> tuple[Path, dict, dict]:
    """Resume a copy of the run stopped at update 3 to the end; returns its folder and both legs' reports."""
    first = runs.stopped_report
    run_dir = folder / "run"
    shutil.copytree(runs.stopped_dir, run_dir)
    second = pretrain(overrides(runs.corpus, run_dir, *extra), folder / "reports", resume="auto")[0]
    assert [(r["start"], r["step"]) for r in (first, second)] == [(0, 3), (3, 6)]
    assert f"resumed from {run_dir / 'step_00000003'} at update 3" in (run_dir / "train.log").read_text()
    return run_dir, first, second


def test_stop_and_resume_equals_straight(runs: Runs, tmp_path: Path) -> None:
    """The first leg ran with 2 workers prefetching ahead: the checkpoint counts batches received, not sent."""
    run_dir, first, second = resume_stopped_copy(runs, tmp_path)
    assert first["losses"] + second["losses"] == runs.straight_report["losses"]  # exact floats
    assert_identical(final_params(run_dir), final_params(runs.straight_dir))
    assert second["param_sha256"] == runs.straight_report["param_sha256"]


def test_resume_with_dataloader_workers_equals_straight(runs: Runs, tmp_path: Path) -> None:
    run_dir, first, second = resume_stopped_copy(runs, tmp_path, WORKERS)
    assert first["losses"] + second["losses"] == runs.straight_report["losses"]
    assert_identical(final_params(run_dir), final_params(runs.straight_dir))


def test_sigkill_mid_run_then_resume_equals_straight(runs: Runs, tmp_path: Path) -> None:
    runs.mid_run.wait()
    kept = [p.name for p in list_checkpoints(runs.mid_run_dir)]
    assert "step_00000002" in kept and "step_00000006" not in kept

    resumed = pretrain(overrides(runs.corpus, runs.mid_run_dir), tmp_path, resume="auto")[0]
    assert resumed["start"] in (2, 4) and resumed["step"] == UPDATES
    assert resumed["losses"] == runs.straight_report["losses"][resumed["start"] :]
    assert_identical(final_params(runs.mid_run_dir), final_params(runs.straight_dir))


def test_sigkill_during_a_save_then_resume_equals_straight(runs: Runs, tmp_path: Path) -> None:
    runs.mid_save.wait()
    assert runs.partial_files == ["config.yaml", "model.safetensors", "train_state.pt"]  # no meta.json yet
    assert runs.partial.is_dir()
    assert [p.name for p in step_folders(runs.mid_save_dir)] == ["step_00000002", "step_00000004"]

    resumed = pretrain(overrides(runs.corpus, runs.mid_save_dir), tmp_path, resume="auto")[0]
    assert (resumed["start"], resumed["step"], resumed["saved"]) == (4, UPDATES, [6])  # from the end of epoch 0
    assert resumed["losses"] == runs.straight_report["losses"][4:]
    assert_identical(final_params(runs.mid_save_dir), final_params(runs.straight_dir))
    assert not runs.partial.exists()  # the new save of step 6 replaced the leftover
