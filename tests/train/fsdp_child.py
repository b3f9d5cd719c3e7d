"""Child of test_state_dicts_fsdp (torchrun, 2 CPU processes, gloo): FSDP2 next to an unsharded replica.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/train/fsdp_child.py OUT_DIR

Both ranks feed the same input, so the sharded model's averaged gradient equals the replica's. After one AdamW
step the full weights and optimizer state (model_state / optimizer_state: collectives) go into a step folder;
a fresh sharded model and optimizer load it on every rank and take a second step beside the replica. Rank 0
writes OUT_DIR/report.json with the largest differences from the replica.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from ssl_audio.train.checkpoint import load_checkpoint, save_checkpoint
from ssl_audio.train.state_dicts import is_sharded, load_model_state, load_optimizer_state, model_state, optimizer_state


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))


def sharded() -> nn.Module:
    model = build()
    for layer in (model[0], model[3]):
        fully_shard(layer)
    fully_shard(model)
    return model


def step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))  # the same on every rank
    model(x).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    replica, model = build(), sharded()
    adam = {"lr": 0.01, "betas": (0.9, 0.98), "eps": 1e-6}
    replica_opt, opt = torch.optim.AdamW(replica.parameters(), **adam), torch.optim.AdamW(model.parameters(), **adam)
    step(replica, replica_opt, 1)
    step(model, opt, 1)
    weights, opt_state = model_state(model), optimizer_state(model, opt)  # every rank: they gather the shards
    report: dict = {"sharded": is_sharded(model), "other_rank_empty": None}
    if rank == 0:
        names = [name for name, _ in replica.named_parameters()]
        moments = {n: s["exp_avg_sq"] for n, s in zip(names, replica_opt.state_dict()["state"].values(), strict=True)}
        report["keys"] = sorted(weights)
        report["weights_after_1"] = largest_difference(weights, replica.state_dict())
        report["exp_avg_sq_after_1"] = largest_difference(
            {n: opt_state["state"][n]["exp_avg_sq"] for n in names}, moments
        )
        save_checkpoint(out, 1, model_state=weights, train_state={"optimizer": opt_state}, config_text="{}\n")
    else:
        report["other_rank_empty"] = weights == {}
    dist.barrier()
    saved = load_checkpoint(out / "step_00000001")
    fresh = sharded()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.5)  # the loaded state brings back lr 0.01
    load_model_state(fresh, saved.model_state, source="step 1")
    load_optimizer_state(fresh, fresh_opt, saved.train_state["optimizer"], source="step 1")
    step(replica, replica_opt, 2)
    step(fresh, fresh_opt, 2)
    weights = model_state(fresh)
    if rank == 0:
        report["weights_after_2"] = largest_difference(weights, replica.state_dict())
        (out / "report.json").write_text(json.dumps(report))
    else:
        (out / "rank1.json").write_text(json.dumps(report))
    dist.barrier()  # no collective may still be in flight on either rank when the group goes
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # CI once saw both ranks abort ("terminate called without an active exception") in torch's teardown, after
    # the work; the reports are written, so skip interpreter finalisation, where gloo's threads can die so.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
