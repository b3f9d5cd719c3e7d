"""Checkpoints: one folder per update step, written whole or not at all.

    <run>/step_00001000/
        model.safetensors   weights (no pickled code can hide in safetensors)
        train_state.pt      optimizer, scheduler, scaler, per-rank RNG, sampler position, counters:
                            plain tensors and containers, read back with torch.load(weights_only=True)
        config.yaml         the resolved config
        meta.json           step, validation loss and the size and SHA-256 of every file; written last

A folder is written as `.step_00001000.tmp/` and renamed when complete, so a crash mid-save leaves
nothing that looks like a checkpoint; `meta.json` then catches truncation or corruption after the fact.
A save that fails (disk full, I/O error) removes its temporary folder and raises CheckpointSaveError naming
the file and the reason; the checkpoints already written are untouched. A process killed mid-save leaves the
temporary folder behind: the next run removes it when it takes the run folder (train/run_folder.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from ssl_audio.step_folder import (  # the reading half, re-exported: what find_resume and pruning use
    CONFIG_FILE,
    META_FILE,
    MODEL_FILE,
    PREFIX,
    STATE_FILE,
    Checkpoint,
    CheckpointError,
    _sha256,
    load_checkpoint,
    read_meta,
    strip_compile_prefix,
)


class CheckpointSaveError(CheckpointError):
    """A checkpoint that could not be written (e.g. the disk is full); the message names the file."""


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"{PREFIX}{step:08d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_reason(err: OSError, path: str | os.PathLike) -> str:
    """`no space left on device at <path>` and the like: the reason first, then where."""
    if err.errno == errno.ENOSPC:
        return f"no space left on device at {path}"
    return f"{(err.strerror or str(err)).lower()} at {path}"


class _WholeWrites:
    """A file object whose write() writes everything or raises: torch.save turns a short write into an
    `unexpected pos` RuntimeError, so the OSError behind it (ENOSPC) is kept here to be reported."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[self.raw.write(view) :]  # a full disk first writes short, then raises ENOSPC
        except OSError as err:
            self.error = err
            raise
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


def _write_file(path: Path, write: Any) -> None:
    """Run `write(file)` on a new file at `path`; any OSError behind a failure is raised as that OSError."""
    with open(path, "wb", buffering=0) as raw:
        out = _WholeWrites(raw)
        try:
            write(out)
        except Exception as err:
            if out.error is not None and out.error is not err:
                raise out.error from err
            raise


def _safetensors(model_state: dict[str, torch.Tensor]) -> bytes:
    return safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in model_state.items()})


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    config_text: str,
    val_loss: float | None = None,
) -> Path:
    """Write a complete checkpoint for `step` atomically; returns its folder. On failure nothing is left."""
    final = step_dir(Path(run_dir), step)
    tmp = final.with_name(f".{final.name}.tmp")
    model_state = strip_compile_prefix(model_state, source=f"step {step}'s weights")  # the plain model's names
    for name, value in model_state.items():
        if not torch.isfinite(value).all() and value.is_floating_point():
            raise CheckpointError(f"refusing to save step {step}: parameter {name!r} holds NaN/Inf")
    file = tmp
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        file = tmp / MODEL_FILE  # serialised in memory: safetensors' own writer hides the errno of a failure
        _write_file(file, lambda f: f.write(_safetensors(model_state)))
        file = tmp / STATE_FILE
        _write_file(file, lambda f: torch.save(train_state, f))
        file = tmp / CONFIG_FILE
        _write_file(file, lambda f: f.write(config_text.encode("utf-8")))
        file = tmp / META_FILE
        _write_meta(tmp, step, val_loss)
        file = final
        if final.exists():  # saving the same step again (e.g. the end of a run that just saved)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(final.parent)
    except Exception as err:  # not KeyboardInterrupt: like a kill, it leaves the folder to the next run
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space the partial save took
        if isinstance(err, OSError):
            raise CheckpointSaveError(f"cannot save step {step}: {os_error_reason(err, file)}") from None
        raise
    return final


def _write_meta(tmp: Path, step: int, val_loss: float | None) -> None:
    """Sizes and hashes of the three files, then meta.json itself: what marks the folder complete."""
    files = {}
    for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE):
        _fsync(tmp / name)
        files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
    meta = {"step": step, "val_loss": val_loss, "files": files}
    _write_file(tmp / META_FILE, lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    _fsync(tmp / META_FILE)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run (complete or not), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def find_resume(run_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; broken ones are skipped with a warning."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}", stacklevel=2)
    return None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` (at least 1) complete checkpoints and the best by validation loss.

    Call only after a successful save. Folders without a valid meta.json are left alone (never deleted
    on a guess); returns the deleted folders.
    """
    metas = []
    for path in list_checkpoints(run_dir):
        try:
            metas.append((path, read_meta(path, verify=False)))
        except CheckpointError:
            continue
    keep = {path for path, _ in metas[-max(keep_last, 1) :]}  # the newest always stays: it is what resumes
    scored = [(m["val_loss"], path) for path, m in metas if m.get("val_loss") is not None]
    if scored:
        keep.add(min(scored)[1])
    deleted = [path for path, _ in metas if path not in keep]
    for path in deleted:
        shutil.rmtree(path)
    return deleted
