"""Checkpoints: atomic folders, corruption caught through meta.json, no code run on load, pruning, NaN refused."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import FullDisk

import ssl_audio.train.checkpoint as ckpt
from ssl_audio.train.checkpoint import (
    CheckpointError,
    CheckpointSaveError,
    find_resume,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_meta,
    save_checkpoint,
)
from ssl_audio.train.rng import capture_rng


def model_state(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"w": torch.randn(8, 4, generator=g), "b": torch.randn(4, generator=g), "count": torch.tensor([step])}


def train_state(step: int) -> dict:
    return {"step": step, "skipped": 0, "world_size": 1, "rng": [capture_rng()], "optimizer": {"state": {}}}


def save(run: Path, step: int, val_loss: float | None = None) -> Path:
    return save_checkpoint(
        run, step, model_state=model_state(step), train_state=train_state(step), config_text=f"step: {step}\n",
        val_loss=val_loss,
    )  # fmt: skip


def truncate(path: Path, keep: int | None = None) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2 if keep is None else keep)


def test_round_trip(tmp_path: Path) -> None:
    path = save(tmp_path, 7, val_loss=1.25)
    assert path == tmp_path / "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "meta.json", "model.safetensors", "train_state.pt"]
    loaded = load_checkpoint(path)
    assert (loaded.step, loaded.val_loss, loaded.config_text) == (7, 1.25, "step: 7\n")
    for key, value in model_state(7).items():
        assert torch.equal(loaded.model_state[key], value)
    assert loaded.train_state["step"] == 7
    assert torch.equal(loaded.train_state["rng"][0]["torch"], train_state(7)["rng"][0]["torch"])
    meta = json.loads((path / "meta.json").read_text())
    assert meta["files"]["model.safetensors"]["bytes"] == (path / "model.safetensors").stat().st_size


def test_partial_save_never_looks_like_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At every fsync of a save in progress, list/resume see only the previous checkpoint."""
    first = save(tmp_path, 1)
    seen = []
    real_fsync = ckpt._fsync

    def observing_fsync(path: Path) -> None:
        real_fsync(path)
        if path.parent.name == ".step_00000002.tmp":
            found = find_resume(tmp_path)
            seen.append((path.name, [p.name for p in list_checkpoints(tmp_path)], found.path if found else None))

    monkeypatch.setattr(ckpt, "_fsync", observing_fsync)
    save(tmp_path, 2)
    names = [name for name, _, _ in seen]
    assert names == ["model.safetensors", "train_state.pt", "config.yaml", "meta.json"]
    assert all(listed == ["step_00000001"] and found == first for _, listed, found in seen)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    assert not list(tmp_path.glob(".*"))  # the temporary folder was renamed, nothing left behind


def test_crash_mid_save_leaves_a_temp_folder_that_list_resume_and_prune_ignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt mid-save stands for a killed process: the temp folder stays (the next run removes it)."""
    save(tmp_path, 1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)  # train_state.pt is written after model.safetensors
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)
    monkeypatch.undo()
    tmp = tmp_path / ".step_00000002.tmp"
    assert (tmp / "model.safetensors").is_file() and not (tmp / "meta.json").exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]
    assert find_resume(tmp_path).step == 1
    assert prune_checkpoints(tmp_path, keep_last=1) == []  # the temp folder is neither counted nor deleted
    assert tmp.is_dir()
    save(tmp_path, 2)  # saving that step again replaces the leftover
    assert not tmp.exists() and load_checkpoint(tmp_path / "step_00000002").step == 2


@pytest.mark.parametrize("name", ["model.safetensors", "train_state.pt"])
def test_truncated_file_is_skipped_by_find_resume_with_a_warning(tmp_path: Path, name: str) -> None:
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    truncate(newest / name)
    with pytest.warns(UserWarning, match=rf"skipping checkpoint: .*step_00000002/{name}: truncated"):
        found = find_resume(tmp_path)
    assert found.step == 1 and found.path == tmp_path / "step_00000001"


@pytest.mark.parametrize("name", ["model.safetensors", "train_state.pt", "config.yaml"])
def test_explicit_load_of_a_truncated_checkpoint_names_the_file(tmp_path: Path, name: str) -> None:
    path = save(tmp_path, 3)
    size = (path / name).stat().st_size
    truncate(path / name)
    with pytest.raises(CheckpointError, match=rf"{path / name}: truncated \({size // 2} of {size} bytes\)"):
        load_checkpoint(path)


def test_same_size_corruption_is_caught_by_the_hash(tmp_path: Path) -> None:
    path = save(tmp_path, 3)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip the bits of one weight byte
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path / 'model.safetensors'}: corrupt \(SHA-256"):
        load_checkpoint(path)


def test_missing_or_unreadable_meta(tmp_path: Path) -> None:
    path = save(tmp_path, 4)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json: unreadable"):
        load_checkpoint(path)
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint \\(no meta.json\\)"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "step_00000099")
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        assert find_resume(tmp_path) is None


class TouchFile:
    """Unpickling this would create `marker`: the payload of a malicious train_state.pt."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return (open, (str(self.marker), "w"))
        return (os.system, (f"touch {self.marker}",))


def replace_with_payload(path: Path, payload: object, *, writer: str) -> None:
    """Swap train_state.pt for `payload` and update meta.json, so only the unpickler can stop it."""
    state = path / "train_state.pt"
    if writer == "torch":
        torch.save({"step": 1, "evil": payload}, state)
    else:
        state.write_bytes(pickle.dumps({"step": 1, "evil": payload}, protocol=2))
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["train_state.pt"] = {"bytes": state.stat().st_size, "sha256": ckpt._sha256(state)}
    (path / "meta.json").write_text(json.dumps(meta))
    read_meta(path)  # the hashes match: the checkpoint looks intact


@pytest.mark.parametrize("how", ["open", "system"])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_train_state_with_code_is_refused_and_never_runs(tmp_path: Path, how: str, writer: str) -> None:
    run = tmp_path / "run"
    save(run, 1)
    path = save(run, 2)
    marker = tmp_path / "pwned"
    replace_with_payload(path, TouchFile(marker, how), writer=writer)
    with pytest.raises(CheckpointError, match=rf"{path / 'train_state.pt'}: refused or unreadable"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.warns(UserWarning, match="train_state.pt: refused"):
        assert find_resume(run).step == 1  # resume falls back to the previous checkpoint
    assert not marker.exists()


def test_prune_keeps_the_last_k_and_the_best_and_never_folders_without_meta(tmp_path: Path) -> None:
    losses = {1: 5.0, 2: 2.0, 3: 4.0, 4: 3.0, 5: None, 6: 7.0}
    for step, loss in losses.items():
        save(tmp_path, step, val_loss=loss)
    no_meta = tmp_path / "step_00000000"  # e.g. a folder someone copied by hand
    no_meta.mkdir()
    (no_meta / "model.safetensors").write_bytes(b"x")
    bad_meta = save(tmp_path, 7)
    (bad_meta / "meta.json").write_text("{")
    (tmp_path / ".step_00000008.tmp").mkdir()
    other = tmp_path / "notes"
    other.mkdir()

    deleted = prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in deleted) == ["step_00000001", "step_00000003", "step_00000004"]
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_00000000", "step_00000002", "step_00000005", "step_00000006", "step_00000007",
    ]  # fmt: skip
    assert (tmp_path / ".step_00000008.tmp").is_dir() and other.is_dir()

    deleted = prune_checkpoints(tmp_path, keep_last=0)  # the newest (what resumes) and the best stay
    assert sorted(p.name for p in deleted) == ["step_00000005"]
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_00000000", "step_00000002", "step_00000006", "step_00000007",
    ]  # fmt: skip


def test_prune_without_validation_keeps_only_the_last(tmp_path: Path) -> None:
    for step in range(1, 5):
        save(tmp_path, step)
    prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_save_refuses_non_finite_weights(tmp_path: Path, bad: float) -> None:
    save(tmp_path, 1)
    state = model_state(2)
    state["w"][3, 1] = bad
    with pytest.raises(CheckpointError, match="refusing to save step 2: parameter 'w' holds NaN/Inf"):
        save_checkpoint(tmp_path, 2, model_state=state, train_state=train_state(2), config_text="")
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]  # no folder, no leftover


def folder_bytes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in path.iterdir()}


@pytest.mark.parametrize("file", ["model.safetensors", "train_state.pt", "config.yaml", "meta.json"])
def test_full_disk_mid_save_names_the_file_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str
) -> None:
    first = save(tmp_path, 1)
    sizes = folder_bytes(first)  # step 2's files have the same sizes (same shapes, same config length)
    order = ["model.safetensors", "train_state.pt", "config.yaml", "meta.json"]
    free = sum(sizes[name] for name in order[: order.index(file)]) + sizes[file] // 2  # runs out inside `file`
    monkeypatch.setattr(ckpt, "open", FullDisk(free), raising=False)
    with pytest.raises(CheckpointSaveError) as err:
        save(tmp_path, 2)
    monkeypatch.undo()
    assert str(err.value) == f"cannot save step 2: no space left on device at {tmp_path / '.step_00000002.tmp' / file}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]  # the partial folder freed its space
    assert find_resume(tmp_path).step == 1 and load_checkpoint(first).config_text == "step: 1\n"


def test_full_disk_inside_torch_save_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a short write as `unexpected pos`: the ENOSPC behind it is what the message says."""
    real_save = torch.save
    seen: list[BaseException] = []

    def recording_save(obj, f, *args, **kwargs):
        try:
            real_save(obj, f, *args, **kwargs)
        except BaseException as e:
            seen.append(e)
            raise

    monkeypatch.setattr(torch, "save", recording_save)
    first = save(tmp_path, 1)
    monkeypatch.setattr(ckpt, "open", FullDisk((first / "model.safetensors").stat().st_size + 100), raising=False)
    with pytest.raises(CheckpointSaveError, match=r"cannot save step 2: no space left on device at .*train_state\.pt$"):
        save(tmp_path, 2)
    assert seen and "unexpected pos" in str(seen[0])  # what torch itself raised


TMPFS_SAVES = """
import sys
from pathlib import Path
import torch
from ssl_audio.train.checkpoint import CheckpointSaveError, find_resume, save_checkpoint
run = Path(sys.argv[1])
for step in (1, 2):  # 120 kB of weights and 120 kB of train state each, on a 400 kB disk
    state = {"w": torch.randn(30000, generator=torch.Generator().manual_seed(step))}
    try:
        save_checkpoint(run, step, model_state=state, train_state={"m": state}, config_text="c: 1\\n")
    except CheckpointSaveError as err:
        print(err)
print(find_resume(run).step, sorted(p.name for p in run.iterdir()))
"""


def _tmpfs_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _tmpfs_works(), reason="needs a private mount namespace to mount a small tmpfs")
def test_a_real_full_tmpfs(tmp_path: Path) -> None:
    """The kernel's ENOSPC on a 400 kB tmpfs: torch.save's `unexpected pos` is reported as a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    script = f"mount -t tmpfs -o size=400k tmpfs {mount} && exec {sys.executable} -c '{TMPFS_SAVES}' {mount}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"cannot save step 2: no space left on device at {mount / '.step_00000002.tmp' / 'train_state.pt'}",
        "1 ['step_00000001']",
    ]
