"""The optimizer: AdamW, fused into one pass over the parameters on the devices torch has a kernel for.

torch's default AdamW on a CPU loops over the tensors in python; the fused kernel does the same maths in C++
(`python tools/benchmark_adamw.py`: 94 M fp32 parameters on one Xeon core, 0.115 s per step against 0.429 s).
Not fused: FSDP's sharded parameters, and fp16 runs, whose loss scaler would hand the overflow check to the fused
kernel, so that accelerate could no longer tell a skipped update (accelerate issue 4242).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")


def make_adamw(groups: Iterable[dict], lr: float, betas: tuple[float, float], eps: float, *, device: torch.device,
               sharded: bool = False, loss_scaled: bool = False) -> torch.optim.AdamW:  # fmt: skip
    """AdamW over parameter groups (each with its own weight_decay); fused where the device allows it."""
    fused = device.type in FUSED_DEVICES and not sharded and not loss_scaled
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True if fused else None)


def place_step_counters(optimizer: torch.optim.Optimizer) -> None:
    """Fused AdamW wants each parameter's step counter on that parameter's device, in float32; a checkpoint saved
    by an unfused optimizer brings them back on the host (torch places them by the saved groups' settings)."""
    for group in optimizer.param_groups:
        if not (group.get("fused") or group.get("capturable")):
            continue
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor) and (step.device != param.device or step.dtype != torch.float32):
                state["step"] = step.to(param.device, torch.float32)
