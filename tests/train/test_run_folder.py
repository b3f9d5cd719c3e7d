"""The run folder: one run at a time (a lock the kernel drops with its process), stale temporary saves removed
before anything is written, and an unwritable run_dir named with its reason instead of a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import child_env, finish_child, start_child, step_folders, wav2vec2_overrides

from ssl_audio.train.run_folder import RunFolderBusyError, RunFolderError, take_run_folder

HOLD = """
import sys, time
from ssl_audio.train.run_folder import take_run_folder
folder = take_run_folder(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def hold_in_child(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run folder (until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], env=child_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.slow  # the holder imports torch
def test_a_held_folder_is_refused_naming_pid_and_host_until_its_holder_dies(tmp_path: Path) -> None:
    holder = hold_in_child(tmp_path)
    try:
        with pytest.raises(RunFolderBusyError) as err:
            take_run_folder(tmp_path)
        assert str(err.value) == (
            f"run_dir {tmp_path} is in use by another run (pid {holder.pid} on host {socket.gethostname()}; "
            f"lock {tmp_path / '.lock'}); wait for it to end, or choose another run_dir"
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with take_run_folder(tmp_path) as folder:  # the kernel dropped the dead holder's lock
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"
        assert folder.removed == []
    with take_run_folder(tmp_path):  # and release() dropped ours
        pass


def test_stale_temporary_saves_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / ".step_00000004.tmp").mkdir()
    (tmp_path / ".step_00000004.tmp" / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "config.yaml.tmp").write_text("half a config")
    kept = ["config.yaml", "step_00000002", "train.log"]
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "step_00000002").mkdir()
    (tmp_path / "train.log").write_text("update 2\n")
    with take_run_folder(tmp_path) as folder:
        assert folder.removed == [tmp_path / ".step_00000004.tmp", tmp_path / "config.yaml.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", *kept]


def test_a_folder_under_a_file_is_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError) as err:
        take_run_folder(tmp_path / "file" / "run")
    assert (
        str(err.value)
        == f"run_dir {tmp_path / 'file' / 'run'}: cannot write (not a directory at {tmp_path / 'file' / 'run'})"
    )
    with pytest.raises(RunFolderError, match=r"run_dir .*/file: not a folder \(a file or link of that name is there\)"):
        take_run_folder(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(RunFolderError, match=r"cannot write \(permission denied at .*/ro/run\)"):
        take_run_folder(tmp_path / "ro" / "run")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `ssl-audio pretrain` (an empty recipe) in a subprocess."""
    recipe = Path(args[0]).parent / "recipe.yaml"
    recipe.write_text("{}\n")
    command = [sys.executable, "-m", "ssl_audio.cli", "pretrain", str(recipe), *args[1:]]
    return subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a CLI process sets up data and model first
def test_unwritable_run_dir_is_one_line_without_traceback(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / "file" / "run"
    done = cli(str(tmp_path / "x"), *wav2vec2_overrides(corpus, run_dir, "train.max_updates=1"))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"ssl-audio pretrain: error: run_dir {run_dir}: cannot write (not a directory at {run_dir})\n"


@pytest.mark.slow
def test_second_pretrain_on_a_live_run_is_refused_and_the_killed_run_resumes(corpus: Path, tmp_path: Path) -> None:
    """A real run holds its folder while it saves update 2 (pretrain_child.py stops it there); a second
    `ssl-audio pretrain` on that folder fails naming it and writes nothing; after SIGKILL the run resumes."""
    run_dir, ready = tmp_path / "run", tmp_path / "saving_2"
    overrides = wav2vec2_overrides(corpus, run_dir, "train.max_updates=3", "train.save_every=1")
    holder = start_child(overrides, tmp_path / "first", SLOW_SAVE_STEP="2", SLOW_SAVE_READY=str(ready))
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()[0][-4000:]
            time.sleep(0.05)
        before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
        second = cli(str(tmp_path / "x"), *overrides)
        assert second.returncode == 2, second.stderr
        assert second.stderr == (
            f"ssl-audio pretrain: error: run_dir {run_dir} is in use by another run (pid {holder.pid} on host "
            f"{socket.gethostname()}; lock {run_dir / '.lock'}); wait for it to end, or choose another run_dir\n"
        )
        assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before  # nothing written
        assert [p.name for p in step_folders(run_dir)] == ["step_00000001"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    assert (run_dir / ".step_00000002.tmp").is_dir()  # the killed save's leftover

    resumed = finish_child(start_child(overrides, tmp_path / "second", resume="auto"), tmp_path / "second")[0]
    assert (resumed["start"], resumed["step"], resumed["saved"]) == (1, 3, [2, 3])
    assert not (run_dir / ".step_00000002.tmp").exists()
    log = (run_dir / "train.log").read_text()
    assert f"removed {run_dir / '.step_00000002.tmp'}: left by a save that did not finish" in log
