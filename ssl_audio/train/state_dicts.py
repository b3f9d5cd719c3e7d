"""Full (unsharded) state dicts of the model and optimizer, whatever wraps the model: DDP, FSDP, torch.compile.

A step folder holds one full copy of the weights under the plain model's names (no `module.`, no `_orig_mod.`)
and one optimizer state. Under FSDP each rank holds a shard of both, so reading them is a collective
(torch.distributed.checkpoint's state-dict helpers gather them to rank 0): call `model_state` and
`optimizer_state` on every process. Unsharded runs keep the optimizer's own state dict (parameters numbered, as
checkpoints always had them); sharded runs store it keyed by parameter name, which either kind of run loads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

from ssl_audio.models.loading import check_compatible, load_weights
from ssl_audio.step_folder import strip_compile_prefix

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered on rank 0 (others get {}), on the CPU


def is_sharded(model: nn.Module) -> bool:
    """True under FSDP (version 1 or 2): parameters and optimizer state live in shards across the ranks."""
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


def plain_model(model: nn.Module) -> nn.Module:
    """The model inside DDP and torch.compile wrappers (sharing their parameters)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, torch._dynamo.eval_frame.OptimizedModule)):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights under the plain model's names, on rank 0 ({} on other ranks under FSDP). Collective."""
    if is_sharded(model):
        return strip_compile_prefix(get_model_state_dict(model, options=FULL), source="the model")
    return strip_compile_prefix(plain_model(model).state_dict(), source="the model")


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load full weights (every rank passes the whole checkpoint) after check_compatible names any misfit."""
    if not is_sharded(model):
        load_weights(plain_model(model), state, source=source)
        return
    # Sharded parameters (DTensor, ShardedTensor) report the full shape, so the check sees the real model.
    check_compatible(strip_compile_prefix(get_model_state_dict(model), source="the model"), state, source=source)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state on rank 0: numbered parameters, or (under FSDP) named ones. Collective."""
    if is_sharded(model):
        return get_optimizer_state_dict(model, optimizer, options=FULL)
    return optimizer.state_dict()


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], *, source: str
) -> None:
    """Load what optimizer_state saved, numbered or named, into this run's optimizer (every rank passes it)."""
    named = any(isinstance(p, str) for group in state["param_groups"] for p in group["params"])
    if named:
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    elif is_sharded(model):
        raise ValueError(
            f"{source}: optimizer state saved by an unsharded run (numbered parameters) cannot be loaded under "
            "FSDP; resume it without FSDP, or start a new run_dir with init.checkpoint"
        )
    else:
        optimizer.load_state_dict(state)
