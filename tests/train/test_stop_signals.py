"""A stop signal (SIGUSR1 before a SLURM time limit, SIGTERM on preemption) ends the update in progress with a
checkpoint and exit code 75; the requeued run resumes from it and ends as a run never stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import REPO, assert_identical, child_env, final_params, step_folders, wav2vec2_overrides

from ssl_audio.train.run_control import REQUEUE_EXIT_CODE, StopRequest


def test_a_signal_is_recorded_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    request = StopRequest()
    with contextlib.ExitStack() as held:
        request.install(held)
        assert request.signal is None
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # the first one is what stopped the run
        assert request.signal == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


def test_loader_workers_ignore_sigusr1_and_still_die_on_sigterm() -> None:
    # SIGTERM must keep its default: multiprocessing ends leftover workers at exit with it, then waits for them.
    code = (
        "import os, signal; from ssl_audio.data.loader import die_with_parent; die_with_parent(os.getppid(), 0); "
        "print([signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGUSR1)])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[False, True]"


def cli(recipe: Path, overrides: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssl_audio.cli", "pretrain", str(recipe), *overrides, *extra]


@pytest.mark.slow
def test_stop_signal_checkpoints_exits_75_and_a_resumed_run_equals_a_straight_one(corpus: Path, tmp_path: Path) -> None:
    name = "SIGUSR1"  # SLURM's --signal=USR1@SECONDS, sent to every process of the step: workers too
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")  # everything in the overrides
    base = wav2vec2_overrides(corpus, tmp_path / "run", "train.max_updates=1000", "data.num_workers=2")
    proc = subprocess.Popen(
        cli(recipe, base), env=child_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, to signal the run and its loader workers together
    )  # fmt: skip
    log = tmp_path / "run" / "train.log"
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and "update 2: loss=" in log.read_text()):  # mid-run, workers running
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, getattr(signal, name))
        _, stderr = proc.communicate(timeout=120)
    finally:  # never leave a 1000-update run behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == REQUEUE_EXIT_CODE, stderr.decode()[-3000:]
    assert f"pretrain: stopped by {name}; continue with --resume auto" in stderr.decode()
    text = log.read_text()
    stopped = int(text.split(f": {name} received")[0].rsplit("update ", 1)[1])
    assert 2 <= stopped < 1000 and step_folders(tmp_path / "run")[-1].name == f"step_{stopped:08d}"

    end = [f"train.stop_at={stopped + 2}"]  # the requeued job, here stopped 2 updates later to stay quick
    straight = wav2vec2_overrides(corpus, tmp_path / "straight", "train.max_updates=1000", "data.num_workers=2")
    for command in (cli(recipe, base + end, "--resume", "auto"), cli(recipe, straight + end)):
        subprocess.run(command, env=child_env(), cwd=REPO, check=True, capture_output=True)
    assert_identical(final_params(tmp_path / "run"), final_params(tmp_path / "straight"))
