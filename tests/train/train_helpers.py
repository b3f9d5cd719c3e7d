"""Shared helpers of the training-loop tests: tiny run settings, comparisons and child-process runners.

Runs use the tiny presets with every dropout off, 1.25 s crops, 3 s batches and no DataLoader workers, so an
update takes a fraction of a second on 2 CPU cores. Child processes run `pretrain_child.py`, which goes
through `ssl_audio.cli pretrain` and prints what each rank saw as one JSON line.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.train.config import Config, load_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHILD = HERE / "pretrain_child.py"
LABEL_RATE = 50  # Hz

# Dropout and layerdrop off everywhere: runs must be comparable across process layouts and interruptions.
TINY = (
    "train.cpu=true",
    "seed=3",
    "data.max_samples=20000",
    "data.max_batch_seconds=3.0",
    "data.num_workers=0",
    "model.preset=tiny",
    "model.config.encoder.dropout=0.0",
    "model.config.encoder.attention_dropout=0.0",
    "model.config.encoder.projection_dropout=0.0",
    "model.config.encoder.activation_dropout=0.0",
    "model.config.encoder.layerdrop=0.0",
    "schedule.warmup_updates=2",
    "optim.lr=0.001",
    "train.log_every=1",
    "train.valid_every=1000",
    "train.valid_max_batches=1",
    "train.save_every=1000",
)


def chirp_with_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A linear chirp between two random frequencies plus white noise, float32 in [-1, 1]."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0, f1 = rng.uniform(100, 3000, size=2)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.4 * np.sin(phase) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def wav2vec2_overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        "model.family=wav2vec2",
        "model.config.feature_dropout=0.0",
        f"data.manifest_dir={corpus / 'manifest'}",
        f"run_dir={run_dir}",
        *extra,
    ]


def hubert_overrides(corpus: Path, run_dir: Path, label_files: tuple[str, str], *extra: str) -> list[str]:
    return [
        *TINY,
        "model.family=hubert",
        f"data.manifest_dir={corpus / 'manifest'}",
        f"run_dir={run_dir}",
        f"data.train_labels=[{label_files[0]}]",
        f"data.valid_labels=[{label_files[1]}]",
        *extra,
    ]


def config(overrides: Sequence[str]) -> Config:
    return load_config(None, list(overrides))


def step_folders(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob("step_*"))


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    """Weights of the newest checkpoint folder of a run."""
    return load_file(step_folders(run_dir)[-1] / "model.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-identical state dicts (same keys, dtypes and bytes)."""
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, atol: float, rtol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(((a[k].float() - b[k].float()).abs().max().item(), k) for k in a if a[k].is_floating_point())
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m} (worst {worst})")


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a child Python: the repo importable, one thread, no GPU, no progress bars."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1")
    env.update(extra)
    return env


def child_command(overrides: Sequence[str], *, resume: str | None = None, processes: int = 1) -> list[str]:
    """`python pretrain_child.py KEY=VALUE ... [--resume R]`, under torchrun when processes > 1."""
    args = [str(CHILD), *overrides] + (["--resume", resume] if resume is not None else [])
    if processes == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]


def read_reports(folder: Path) -> dict[int, dict]:
    """The JSON report of each rank (see pretrain_child.py), by rank."""
    found = {}
    for path in Path(folder).glob("rank*.json"):
        report = json.loads(path.read_text())
        found[report["rank"]] = report
    return found


def start_child(
    overrides: Sequence[str], reports: Path, *, resume: str | None = None, processes: int = 1, **env: str
) -> subprocess.Popen:
    """Start pretraining in child process(es) writing their reports into the folder `reports`."""
    Path(reports).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        child_command(overrides, resume=resume, processes=processes),
        env=child_env(CHILD_REPORTS=str(reports), **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_child(proc: subprocess.Popen, reports: Path, *, processes: int = 1, timeout: float = 300) -> dict[int, dict]:
    """Wait for a child started by start_child; fails with its output unless it succeeded. Reports by rank."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"child timed out after {timeout} s:\n{output[-8000:]}") from None
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{output[-8000:]}"
    found = read_reports(reports)
    assert sorted(found) == list(range(processes)), output[-8000:]
    return found


def pretrain(
    overrides: Sequence[str], reports: Path, *, resume: str | None = None, processes: int = 1, **env: str
) -> dict[int, dict]:
    """Run pretraining in child process(es) to the end; returns the reports by rank."""
    proc = start_child(overrides, reports, resume=resume, processes=processes, **env)
    return finish_child(proc, reports, processes=processes)


class FullDisk:
    """`open` for checkpoint.py on a disk with `free` bytes left: a write past them is cut short, the next
    raises ENOSPC, as the kernel does."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path, mode="r", *args, **kwargs):
        real = open(path, mode, *args, **kwargs)  # noqa: SIM115 (closed by the caller's with-block)
        return real if "w" not in mode else BudgetedFile(real, self)


class BudgetedFile:
    def __init__(self, real, disk: FullDisk) -> None:
        self.real, self.disk = real, disk

    def write(self, data) -> int:
        if self.disk.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = memoryview(data).cast("B")
        written = self.real.write(view[: min(len(view), self.disk.free)])
        self.disk.free -= written
        return written

    def flush(self) -> None:
        self.real.flush()

    def __enter__(self) -> BudgetedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()
