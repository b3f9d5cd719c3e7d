"""Checkpoint state dicts under wrappers: torch.compile's `_orig_mod.` names, and FSDP's shards (2 CPU processes)."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from train_helpers import HERE, REPO, child_env, config, wav2vec2_overrides

from ssl_audio.models.registry import build_model
from ssl_audio.step_folder import MODEL_FILE, CheckpointError, strip_compile_prefix
from ssl_audio.train import checkpoint
from ssl_audio.train.config import resolve_config
from ssl_audio.train.hardware import check_fsdp, fsdp_requested
from ssl_audio.train.loop import train
from ssl_audio.train.state_dicts import is_sharded, load_model_state, model_state, plain_model


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))


def test_compile_prefix_is_stripped_at_any_depth_and_clashes_are_refused() -> None:
    a, b = torch.zeros(2), torch.ones(2)
    assert strip_compile_prefix({"_orig_mod.0.weight": a, "head._orig_mod.bias": b}, source="S") == {
        "0.weight": a, "head.bias": b,
    }  # fmt: skip
    with pytest.raises(CheckpointError, match=r"^S: holds '_orig_mod.0.weight' both with and without"):
        strip_compile_prefix({"_orig_mod.0.weight": a, "0.weight": b}, source="S")


def test_compiled_model_saves_plain_names_and_loads_them() -> None:
    compiled = torch.compile(tiny())  # wrapping only: nothing is compiled until the first call
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    assert plain_model(compiled) is compiled._orig_mod and not is_sharded(compiled)
    weights = model_state(compiled)
    assert sorted(weights) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    other = torch.compile(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    load_model_state(other, weights, source="S")
    assert all(torch.equal(other._orig_mod.state_dict()[k], v) for k, v in weights.items())


def test_step_folder_written_with_compile_names_loads_with_plain_ones(tmp_path: Path) -> None:
    weights = tiny().state_dict()
    compiled_names = {f"_orig_mod.{k}": v for k, v in weights.items()}
    folder = checkpoint.save_checkpoint(tmp_path, 1, model_state=compiled_names, train_state={}, config_text="{}\n")
    assert sorted(load_file(folder / MODEL_FILE)) == sorted(weights)  # saved under the plain names
    save_file(compiled_names, folder / MODEL_FILE)  # as a run with train.compile=true wrote it before the fix
    checkpoint._write_meta(folder, 1, None)
    loaded = checkpoint.load_checkpoint(folder).model_state
    assert sorted(loaded) == sorted(weights) and all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_fsdp_on_cpu_is_refused_naming_what_accelerate_runs_instead() -> None:
    assert fsdp_requested({"ACCELERATE_USE_FSDP": "True"}) and not fsdp_requested({})
    check_fsdp(True, "FSDP", "cuda")
    check_fsdp(False, "MULTI_CPU", "cpu")
    with pytest.raises(ValueError, match=r"FSDP was requested .* on cpu as MULTI_CPU: FSDP needs GPUs"):
        check_fsdp(True, "MULTI_CPU", "cpu")


@pytest.mark.slow
def test_accelerate_asked_for_fsdp_on_cpu_gives_no_fsdp() -> None:
    """What the refusal relies on (accelerate 1.15): it would run DDP, silently."""
    code = "from accelerate import Accelerator; print(Accelerator(cpu=True).distributed_type.value)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(ACCELERATE_USE_FSDP="true"), capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.split()[-1] != "FSDP"


@pytest.mark.slow
def test_fsdp_checkpoint_holds_full_weights_and_optimizer_and_resumes(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(HERE / "fsdp_child.py"), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(command, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads((tmp_path / "report.json").read_text())
    other = json.loads((tmp_path / "rank1.json").read_text())
    assert report["sharded"] and other["other_rank_empty"]  # gathered to rank 0 only
    assert report["keys"] == ["0.bias", "0.weight", "1.bias", "1.weight", "3.bias", "3.weight"]
    # Both ranks' gradients are the replica's and averaging two equal values is exact: the sharded update
    # can differ only by the order of float sums in the all-reduce (none here) and the shard-wise AdamW (elementwise).
    assert report["weights_after_1"] <= 1e-6 and report["exp_avg_sq_after_1"] <= 1e-9
    # A fresh optimizer at lr 0.5 with its moments restored takes the replica's second step: a lost moment or
    # step count would move a weight by ~lr 0.01 instead.
    assert report["weights_after_2"] <= 1e-6


@pytest.mark.slow
def test_compiled_run_saves_plain_names_and_resumes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dynamo wraps and traces the model as train.compile=true does; the eager backend skips inductor's C++ build,
    # which took 8.5 minutes for these two short runs on 2 shared CPU cores (the default backend passed too).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    run = tmp_path / "run"
    overrides = wav2vec2_overrides(corpus, run, "train.compile=true", "train.max_updates=2", "train.save_every=1")
    first = train(config([*overrides, "train.stop_at=1"]))
    saved = load_file(run / "step_00000001" / MODEL_FILE)
    plain = build_model(resolve_config(config(overrides)).model).state_dict()
    assert first.step == 1 and sorted(saved) == sorted(plain)
    second = train(config(overrides), resume="auto")  # refused before: the model expected `_orig_mod.` names
    assert (second.step, len(second.losses)) == (2, 1) and all(map(math.isfinite, second.losses))
    assert sorted(load_file(run / "step_00000002" / MODEL_FILE)) == sorted(plain)
