"""The run folder: one run at a time, and no leftovers of a write that died.

`take_run_folder` creates the folder, takes an exclusive `flock` on `<run>/.lock` and then removes the
temporary folders and files of saves that never finished (`.step_*.tmp/`, `config.yaml.tmp`), before the run
writes anything. The kernel drops the lock when its process dies, so a run killed with SIGKILL never blocks
its own resume; `.lock` holds the holder's PID and host only to name it in the error of a second run.
DataLoader workers forked by the holder share the lock until they exit (they follow their parent within
seconds).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from ssl_audio.train.checkpoint import PREFIX, os_error_reason

LOCK_FILE = ".lock"
STALE_PATTERNS = (f".{PREFIX}*.tmp", "config.yaml.tmp")


class RunFolderError(ValueError):
    """The run folder cannot be used: not writable, or held by another run."""


class RunFolderBusyError(RunFolderError):
    """Another live run holds the folder's lock; the message names its PID and host."""


@dataclass(kw_only=True)
class RunFolder:
    """A run folder this process holds until `release()` (or until it dies)."""

    path: Path
    removed: list[Path]  # stale temporary files and folders removed when it was taken
    fd: int = -1

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not written its PID yet"


def take_run_folder(run_dir: str | os.PathLike) -> RunFolder:
    """Create and lock `run_dir`, then clear stale temporary files; raises RunFolderError naming path and reason."""
    path = Path(run_dir)
    lock_path = path / LOCK_FILE
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise RunFolderError(f"run_dir {path}: not a folder (a file or link of that name is there)") from None
    except OSError as err:
        where = lock_path if path.is_dir() else path
        raise RunFolderError(f"run_dir {path}: cannot write ({os_error_reason(err, where)})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunFolderBusyError(
            f"run_dir {path} is in use by another run ({holder}; lock {lock_path}); wait for it to end, "
            "or choose another run_dir"
        ) from None
    folder = RunFolder(path=path, removed=[], fd=fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        for pattern in STALE_PATTERNS:  # only the lock holder may do this: another run's save could be live
            for stale in sorted(path.glob(pattern)):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
                folder.removed.append(stale)
    except OSError as err:
        folder.release()
        raise RunFolderError(f"run_dir {path}: cannot write ({os_error_reason(err, err.filename or path)})") from None
    return folder
