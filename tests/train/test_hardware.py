from pathlib import Path

from ssl_audio.train.hardware import bf16_units, cpu_flags

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu sse2
"""


def test_cpu_flags_reads_the_first_flags_line(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    flags = cpu_flags(tmp_path / "cpuinfo")
    assert {"avx2", "amx_int8", "avx512_bf16"} <= flags and len(flags) == 8


def test_bf16_units_lists_only_bf16_matrix_units(tmp_path: Path) -> None:
    assert bf16_units({"avx2", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}) == [
        "amx_bf16",
        "amx_tile",
        "avx512_bf16",
    ]
    assert bf16_units({"avx2", "avx512f"}) == []  # AMD Zen 2/3, older Intel: emulated bf16


def test_missing_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "absent") == set()
