"""Peak matrix throughput of the device a run trains on: the denominator of model-FLOPs utilisation (MFU).

Accelerators: the vendors' dense (no sparsity) tensor-core figures per precision, from their data sheets.
CPUs have no such table worth trusting (clocks, cores and matrix units vary too much), so the peak there is a
matmul measured at start-up in the training precision: MFU on a CPU is "share of what this CPU's matmul
reaches", and says so in the run's log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# TFLOP/s, dense. Keys are matched as lower-case substrings of torch.cuda.get_device_name(); first match wins,
# so more specific names come first.
ACCELERATOR_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("h100 pcie", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("h100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM
    ("a100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("l40s", {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("l4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("a10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    ("v100", {"fp16": 125.0, "fp32": 15.7}),
    ("mi300x", {"bf16": 1307.4, "fp16": 1307.4, "tf32": 653.7, "fp32": 163.4}),
)


@dataclass(frozen=True, kw_only=True)
class Peak:
    tflops: float  # peak TFLOP/s the run is measured against
    source: str  # where the figure comes from, for the log


def accelerator_peak(device_name: str, precision: str) -> float | None:
    """Data-sheet peak of a named accelerator in `precision` (bf16, fp16, tf32, fp32); None when unknown."""
    name = device_name.lower()
    for key, peaks in ACCELERATOR_PEAKS:
        if key in name:
            return peaks.get(precision)
    return None


def measure_matmul_tflops(dtype: torch.dtype, *, size: int = 1024, repeats: int = 5) -> float:
    """Best TFLOP/s of a (size x size) @ (size x size) product on the CPU, after one warm-up."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e12


def device_peak(device: torch.device, precision: str, override: float | None = None) -> Peak | None:
    """The peak to divide by: `override` (train.peak_tflops), the accelerator table, or a CPU measurement.

    fp32 on a GPU counts as tf32 when PyTorch lets matmuls use it (torch.backends.cuda.matmul.allow_tf32).
    """
    if override is not None:
        return Peak(tflops=override, source="train.peak_tflops")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        kind = "tf32" if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32 else precision
        tflops = accelerator_peak(name, kind)
        return None if tflops is None else Peak(tflops=tflops, source=f"{name} data sheet, {kind} dense")
    if device.type == "cpu":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        tflops = measure_matmul_tflops(dtype)
        return Peak(tflops=tflops, source=f"measured {dtype} matmul on this CPU, {torch.get_num_threads()} threads")
    return None


def utilisation(flops: float, seconds: float, peak: Peak | None) -> float | None:
    """Model-FLOPs utilisation: achieved FLOP/s over the peak; None without a peak or a duration."""
    if peak is None or seconds <= 0 or peak.tflops <= 0:
        return None
    return flops / seconds / (peak.tflops * 1e12)
