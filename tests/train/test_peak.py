import math

import pytest
import torch

from ssl_audio.train.peak import Peak, accelerator_peak, device_peak, measure_matmul_tflops, utilisation


@pytest.mark.parametrize(
    ("name", "precision", "expected"),
    [
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),  # SXM
        ("NVIDIA H100 PCIe", "bf16", 756.0),  # the more specific name wins
        ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
        ("NVIDIA L4", "fp16", 121.0),
        ("Tesla V100-SXM2-32GB", "bf16", None),  # no bf16 units
        ("Some Future GPU", "bf16", None),
    ],
)
def test_accelerator_peaks_by_device_name(name: str, precision: str, expected: float | None) -> None:
    assert accelerator_peak(name, precision) == expected


def test_utilisation_is_achieved_over_peak() -> None:
    # 45 GFLOP per audio-second at 1,931 audio-s/s is 86.9 TFLOP/s: 8.8 % of an H100's 989.4
    flops = 45e9 * 1931
    assert utilisation(flops, 1.0, Peak(tflops=989.4, source="table")) == pytest.approx(86.895 / 989.4, rel=1e-4)
    assert utilisation(flops, 0.0, Peak(tflops=989.4, source="table")) is None
    assert utilisation(flops, 1.0, None) is None


def test_override_wins_and_cpu_peak_is_measured() -> None:
    assert device_peak(torch.device("cpu"), "fp32", override=12.5) == Peak(tflops=12.5, source="train.peak_tflops")
    peak = device_peak(torch.device("cpu"), "fp32")
    assert peak is not None and "measured" in peak.source
    # A 1024^3 product is 2.1 GFLOP; any CPU this runs on does it in well under 10 s and faster than 1 ms.
    assert 2.1e9 / 10 / 1e12 < peak.tflops < 2.1e9 / 1e-3 / 1e12 and math.isfinite(measure_matmul_tflops(torch.float32))
