"""`ssl-audio pretrain` with a bad config: exit code 2, one line on stderr, and the run folder untouched.

Each case runs the real command in a subprocess; the oracle is the exact message and the folder's files
(a previous run's file stays byte for byte, nothing is added).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # each case starts python and imports torch: 5-15 s on 2 shared cores


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("override", "recipe_tail", "message"),
    [
        ("train.save_every=0", "", "{recipe}: config key 'train.save_every': must be an integer >= 1, got 0"),
        (
            "optim.lr=[1",
            "",
            "{recipe}: config override 'optim.lr=[1': not valid YAML (column 3: expected ',' or ']', but got "
            "'<stream end>'; while parsing a flow sequence at column 1)",
        ),
        (
            "model.config.masking.mask_prob=1.5",
            "",
            "config key 'model.config.masking.mask_prob': must be in [0, 1], got 1.5",
        ),
        (
            "seed=1",
            "optim:\n  lr: 0.002\n",
            "{recipe}: not valid YAML (line 6, column 1: duplicate key 'optim'; key first given at line 4, column 1)",
        ),
    ],
    ids=["save_every", "malformed_override", "model_config", "duplicate_key"],
)
def test_pretrain_refuses_bad_config_and_writes_nothing(tmp_path: Path, override: str, recipe_tail: str, message: str):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("update 10: loss=3.2\n")  # a previous run's file must survive
    before = files(run_dir)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"run_dir: {run_dir}\nmodel: {{family: wav2vec2, preset: tiny}}\ntrain: {{cpu: true}}\n"
        "optim: {lr: 0.001}\ndata: {num_workers: 0}\n" + recipe_tail
    )
    done = run_cli("pretrain", str(recipe), override)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"ssl-audio pretrain: error: {message.format(recipe=recipe)}\n"
    assert files(run_dir) == before
