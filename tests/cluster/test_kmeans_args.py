"""k-means arguments: a bad count is a one-line error naming the flag, before faiss sees it, and writes nothing.

Oracle: the flag, the allowed range and the value, spelled out; the model file must not exist afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_kmeans import index_blocks, write_dump

from ssl_audio.cluster.kmeans import fit_kmeans, sample_frames

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow  # a python start that imports torch: 5-15 s on 2 shared cores
@pytest.mark.parametrize(
    ("k", "message"),
    [
        ("0", "--k must be an integer >= 1, got 0"),
        ("-3", "--k must be an integer >= 1, got -3"),
        ("31", "--k 31: k-means needs at least k=31 points, got 30 (lower --k or sample more)"),
    ],
)
def test_kmeans_fit_refuses_a_bad_k(tmp_path: Path, k: str, message: str):
    features = tmp_path / "features"
    write_dump(features, index_blocks([12, 18]))  # 30 frames
    out = tmp_path / "km.faiss"
    done = run_cli("kmeans", "fit", "--features", str(features), "--k", k, "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"ssl-audio kmeans: error: {message}\n"
    assert not out.exists() and not out.with_name("km.faiss.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "--k must be an integer >= 1, got 0"),
        ({"k": 2.0}, "--k must be an integer >= 1, got 2.0"),
        ({"k": 2, "iterations": 0}, "--iterations must be an integer >= 1, got 0"),
        ({"k": 2, "restarts": 0}, "--restarts must be an integer >= 1, got 0"),
        ({"k": 2, "threads": 0}, "--threads must be an integer >= 1, got 0"),
    ],
)
def test_fit_kmeans_checks_its_counts(kwargs: dict, message: str):
    points = np.arange(20, dtype=np.float32).reshape(10, 2)
    with pytest.raises(ValueError, match=f"^{message}$"):
        fit_kmeans(points, **kwargs)


@pytest.mark.parametrize("max_points", [0, -5])
def test_sample_frames_refuses_an_empty_reservoir(tmp_path: Path, max_points: int):
    features = write_dump(tmp_path, index_blocks([5, 5]))
    with pytest.raises(ValueError, match=f"^--max-points must be an integer >= 1, got {max_points}$"):
        sample_frames(features, max_points=max_points)
