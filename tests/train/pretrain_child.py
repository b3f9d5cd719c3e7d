"""Child process of the resume and multi-process tests: `ssl_audio.cli pretrain` plus one JSON report per rank.

    python tests/train/pretrain_child.py KEY=VALUE ... [--resume auto|DIR]

Runs `ssl-audio pretrain` on an empty recipe with the given overrides and writes, per rank, the JSON file
$CHILD_REPORTS/rank<R>.json: {"rank", "start", "step", "skipped", "losses", "saved", "param_sha256", "trained_rows"}:
the update this call started at, the losses of the updates it ran (exact floats), the steps this rank saved, a hash
of its final weights, and the manifest rows of every training micro-batch this rank ran, in order.

With SLOW_SAVE_STEP=N and SLOW_SAVE_READY=FILE in the environment, the save of step N stops after its files
are written but before meta.json and the rename: it creates FILE and sleeps, so a test can kill it mid-save.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import ssl_audio.train.checkpoint as checkpoint
import ssl_audio.train.loop as loop
from ssl_audio import cli


def main() -> int:
    models: list[torch.nn.Module] = []
    saved: list[int] = []
    results: list[loop.TrainResult] = []
    trained_rows: list[list[int]] = []
    real_build, real_save, real_train, real_fsync, real_forward = (
        loop.build_model,
        loop.save_checkpoint,
        loop.train,
        checkpoint._fsync,
        loop.forward_batch,
    )

    def build_model(*args, **kwargs):
        models.append(real_build(*args, **kwargs))
        return models[-1]

    def save_checkpoint(run_dir, step, **kwargs):
        saved.append(step)
        return real_save(run_dir, step, **kwargs)

    def forward_batch(model, family, batch, **kwargs):
        if model.training:  # validation runs in eval mode
            trained_rows.append(batch.indices.tolist())
        return real_forward(model, family, batch, **kwargs)

    def train(*args, **kwargs):
        results.append(real_train(*args, **kwargs))
        return results[-1]

    slow_step, ready = os.environ.get("SLOW_SAVE_STEP"), os.environ.get("SLOW_SAVE_READY")

    def fsync(path: Path) -> None:  # called once per file after all three are written, then for meta.json
        real_fsync(path)
        if slow_step and Path(path).parent.name == f".{checkpoint.step_dir(Path('.'), int(slow_step)).name}.tmp":
            Path(ready).write_text(str(path))
            time.sleep(3600)

    loop.build_model, loop.save_checkpoint, loop.train, checkpoint._fsync = build_model, save_checkpoint, train, fsync
    loop.forward_batch = forward_batch
    args = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text("{}\n")
        code = cli.main(["pretrain", str(recipe), *args])
    if code != 0:
        return code
    result = results[-1]
    digest = hashlib.sha256()
    for name, tensor in sorted(models[-1].state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    report = {
        "rank": int(os.environ.get("RANK", 0)),
        "start": result.step - len(result.losses),
        "step": result.step,
        "skipped": result.skipped,
        "losses": result.losses,
        "saved": saved,
        "param_sha256": digest.hexdigest(),
        "trained_rows": trained_rows,
    }
    Path(os.environ["CHILD_REPORTS"], f"rank{report['rank']}.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
