"""What the machine can do: bf16 autocast only pays off with bf16 matrix units (AMX, AVX-512 BF16); FSDP only
runs on accelerators."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first 'flags' line of /proc/cpuinfo as a set; empty where there is none (not Linux/x86)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def bf16_units(flags: set[str] | None = None) -> list[str]:
    """The CPU's bf16 matrix-unit flags (sorted); empty means bf16 autocast will be emulated, and slow."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in BF16_FLAGS if f in flags)


def fsdp_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """`accelerate launch --use_fsdp` (or an accelerate config with FSDP) asks for it through this variable."""
    return environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_fsdp(requested: bool, distributed_type: str, device_type: str) -> None:
    """Refuse an FSDP request that accelerate would silently run as DDP: accelerate (1.15) shards only on GPUs
    and other accelerators; on CPU processes it falls back to DDP (or one process), which a user would not see."""
    if requested and distributed_type != "FSDP":
        raise ValueError(
            f"FSDP was requested (ACCELERATE_USE_FSDP=true) but accelerate runs these processes on {device_type} as "
            f"{distributed_type}: FSDP needs GPUs (accelerate shards only on accelerators); drop --use_fsdp on CPU"
        )
