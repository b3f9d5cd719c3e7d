"""The OpenBLAS kernel for faiss is chosen from the CPU's flags, before faiss loads, unless one is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ssl_audio.cluster.blas import best_kernel, select_blas_kernel
from ssl_audio.train.hardware import cpu_flags

SAPPHIRE_RAPIDS = {"sse2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "amx_bf16", "avx512_bf16"}
ZEN3 = {"sse2", "avx", "avx2", "fma", "bmi2"}


def test_best_kernel_follows_the_instruction_sets() -> None:
    assert best_kernel(SAPPHIRE_RAPIDS) == "SkylakeX"
    assert best_kernel(ZEN3) == "Haswell"
    assert best_kernel({"avx512f", "avx2", "fma"}) == "Haswell"  # AVX-512 without BW/VL/DQ (Knights Landing)
    assert best_kernel({"sse2", "avx"}) is None  # left to OpenBLAS's own detection


def test_a_kernel_already_chosen_is_kept() -> None:
    environ = {"OPENBLAS_CORETYPE": "Zen"}
    assert select_blas_kernel(environ, SAPPHIRE_RAPIDS) is None and environ == {"OPENBLAS_CORETYPE": "Zen"}


def test_without_one_the_best_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    environ: dict[str, str] = {}
    assert select_blas_kernel(environ, SAPPHIRE_RAPIDS) == "SkylakeX" and environ["OPENBLAS_CORETYPE"] == "SkylakeX"


@pytest.mark.slow
def test_faiss_openblas_runs_the_chosen_kernel() -> None:
    pytest.importorskip("threadpoolctl")
    expected = best_kernel(cpu_flags())
    if expected is None:
        pytest.skip("no listed kernel fits this CPU")
    code = (
        "import json, os; import ssl_audio.cluster.kmeans; from ssl_audio.cluster.blas import blas_kernels; "
        "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'), blas_kernels()]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    chosen, kernels = json.loads(out.stdout.strip().splitlines()[-1])
    faiss_kernels = [arch for package, arch in kernels.items() if package.startswith("faiss")]
    assert chosen == expected and faiss_kernels and set(faiss_kernels) == {expected}
