"""What the CPU can do fast: bf16 autocast only pays off with bf16 matrix units (AMX, AVX-512 BF16)."""

from __future__ import annotations

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
