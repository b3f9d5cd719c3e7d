"""`dump-features` takes its shard from the launcher: RANK/WORLD_SIZE, else a Slurm array task, else 0 of 1.

Oracles: the shard numbers worked out by hand for each environment; for the command, the row range
[r * n // w, (r + 1) * n // w) and torchaudio's kaldi MFCC + deltas computed here from the wavs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from ssl_audio.cli import main
from ssl_audio.cluster.features import shard_from_environment
from ssl_audio.data.manifest import build_manifests, load_manifest

SR = 16_000
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4)),
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}, (2, 5)),
        # --array=4-6: tasks 4, 5, 6 are shards 0, 1, 2
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "4"}, (1, 3)),
        # --array=1-9:4: tasks 1, 5, 9
        (
            {
                "SLURM_ARRAY_TASK_ID": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "4",
            },
            (2, 3),
        ),  # fmt: skip
        # torchrun inside a Slurm array task: the process group wins
        ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8"}, (1, 2)),
        ({"SLURM_JOB_ID": "123", "SLURM_PROCID": "0"}, (0, 1)),  # a plain Slurm job: no array, one shard
    ],
)
def test_shard_from_environment(env: dict[str, str], expected: tuple[int, int]) -> None:
    assert shard_from_environment(env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "1"}, "environment variable WORLD_SIZE is unset but RANK is set"),
        ({"WORLD_SIZE": "2"}, "environment variable RANK is unset but WORLD_SIZE is set"),
        ({"RANK": "one", "WORLD_SIZE": "2"}, "environment variable RANK='one' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK=2, WORLD_SIZE=2: shard 2 is not in \[0, 2\)"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, r"RANK=0, WORLD_SIZE=0: shard 0 is not in \[0, 0\)"),
        ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT is unset but SLURM_ARRAY_TASK_ID is set"),
        (
            {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3"},  # an array from 2 without _MIN
            r"SLURM_ARRAY_TASK_ID=4 \(SLURM_ARRAY_TASK_MIN=0, .*\): shard 4 is not in \[0, 3\)",
        ),
        (
            {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_STEP": "4"},
            r"SLURM_ARRAY_TASK_ID=6 .*: the task is not on the array's grid",
        ),
    ],
)
def test_bad_environment_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shard_from_environment(env)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 clips (MFCC frames: (n - 400) // 160 + 1 each) and a manifest of all of them."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(4)
    (root / "audio").mkdir()
    for i, n in enumerate((4_000, 5_123, 6_400, 4_801, 7_000)):
        wave = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * np.arange(n) / SR) + 0.05 * rng.standard_normal(n)
        sf.write(root / "audio" / f"c{i}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
    build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
    return root


def oracle_mfcc(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32")
    assert rate == SR
    mfcc = kaldi.mfcc(torch.from_numpy(data)[None], sample_frequency=SR, use_energy=False)
    d1 = AF.compute_deltas(mfcc.T)
    return torch.cat([mfcc.T, d1, AF.compute_deltas(d1)]).T.numpy()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE") and not k.startswith("SLURM_")}
    full.update(OMP_NUM_THREADS="1", TQDM_DISABLE="1", **env)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], env=full, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # two subprocesses, each importing torch
def test_dump_features_takes_its_shard_from_rank_and_world_size(corpus: Path, tmp_path: Path) -> None:
    manifest = load_manifest(corpus / "manifest" / "train.tsv")
    out = tmp_path / "features"
    args = ("dump-features", "--manifest", str(corpus / "manifest" / "train.tsv"), "--source", "mfcc", "--out")
    done = cli(*args, str(out), RANK="1", WORLD_SIZE="2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["shard0001of0002.f32", "shard0001of0002.json"]
    meta = json.loads((out / "shard0001of0002.json").read_text())
    assert (meta["shard"], meta["num_shards"], meta["rows"]) == (1, 2, [2, 5])  # rows [1 * 5 // 2, 2 * 5 // 2)
    expected = [oracle_mfcc(manifest.audio_path(row)) for row in range(2, 5)]
    assert meta["lengths"] == [len(e) for e in expected] == [(n - 400) // 160 + 1 for n in manifest.num_samples[2:]]
    frames = np.fromfile(out / "shard0001of0002.f32", dtype=np.float32).reshape(-1, 39)
    # The same fp32 computation in another process: only a summation order could differ. A cepstral coefficient
    # is a DCT of 23 log-mel energies of |x| < 30: < 23 ulp(30) = 4e-5; deltas mix 9 frames with sum |w| < 1.
    np.testing.assert_allclose(frames, np.concatenate(expected), rtol=1e-5, atol=1e-4)

    bad = cli(*args, str(tmp_path / "bad"), RANK="2", WORLD_SIZE="2")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "ssl-audio dump-features: error: RANK=2, WORLD_SIZE=2: shard 2 is not in [0, 2); pass --shard and --num-shards"
    )
    assert not (tmp_path / "bad").exists()


def test_flags_win_over_the_environment(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = str(corpus / "manifest" / "train.tsv")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    base = ["dump-features", "--manifest", manifest, "--source", "mfcc", "--out"]
    assert main([*base, str(tmp_path / "a"), "--shard", "0", "--num-shards", "1"]) == 0
    assert [p.name for p in (tmp_path / "a").glob("*.json")] == ["shard0000of0001.json"]
    assert main([*base, str(tmp_path / "b"), "--num-shards", "5"]) == 0  # the shard still from RANK
    assert [p.name for p in (tmp_path / "b").glob("*.json")] == ["shard0001of0005.json"]
    assert json.loads((tmp_path / "b" / "shard0001of0005.json").read_text())["rows"] == [1, 2]
    monkeypatch.setenv("RANK", "x")  # both flags given: the environment is not even read
    assert main([*base, str(tmp_path / "c"), "--shard", "2", "--num-shards", "3"]) == 0
    assert [p.name for p in (tmp_path / "c").glob("*.json")] == ["shard0002of0003.json"]


def test_no_environment_means_one_shard_as_before(corpus: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    for name in [k for k in os.environ if k in ("RANK", "WORLD_SIZE") or k.startswith("SLURM_ARRAY")]:
        monkeypatch.delenv(name)
    out = tmp_path / "features"
    manifest = str(corpus / "manifest" / "train.tsv")
    assert main(["dump-features", "--manifest", manifest, "--source", "mfcc", "--out", str(out)]) == 0
    meta = json.loads((out / "shard0000of0001.json").read_text())
    assert (meta["shard"], meta["num_shards"], meta["rows"]) == (0, 1, [0, 5])
