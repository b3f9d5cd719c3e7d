"""Pick the OpenBLAS kernel faiss runs k-means on, from the CPU's own flags.

faiss-cpu's wheels bundle OpenBLAS 0.3.15, whose CPU detection predates Sapphire Rapids: there it falls back
to its slowest kernel ("Prescott"), and a 50k x 768, k=200, 10-iteration fit took 13.5 s as installed against
4.6 s with OPENBLAS_CORETYPE=SkylakeX on the same machine. OpenBLAS reads OPENBLAS_CORETYPE once, when the
library loads, so this package's `__init__` calls `select_blas_kernel` before any module imports faiss. A
value set by the user (or the machine) is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from ssl_audio.train.hardware import cpu_flags

# OpenBLAS kernel names and the instruction sets their sgemm kernels need, best first.
KERNELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("SkylakeX", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)


def best_kernel(flags: set[str]) -> str | None:
    """The fastest OpenBLAS kernel these CPU flags can run; None where no listed one fits (not x86)."""
    for name, needs in KERNELS:
        if needs <= flags:
            return name
    return None


def select_blas_kernel(environ: MutableMapping[str, str] = os.environ, flags: set[str] | None = None) -> str | None:
    """Set OPENBLAS_CORETYPE to the best kernel for this CPU; returns what was set (None: left as it was)."""
    if environ.get("OPENBLAS_CORETYPE") or "faiss" in sys.modules:  # chosen already, or too late to matter
        return None
    kernel = best_kernel(cpu_flags() if flags is None else flags)
    if kernel is not None:
        environ["OPENBLAS_CORETYPE"] = kernel
    return kernel


def blas_kernels() -> dict[str, str]:
    """Kernel in use of each loaded OpenBLAS, by the package that ships it ({} without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info  # optional: scikit-learn brings it
    except ImportError:
        return {}
    return {
        os.path.basename(os.path.dirname(info["filepath"])).removesuffix(".libs"): str(info.get("architecture"))
        for info in threadpool_info()
        if info.get("internal_api") == "openblas"
    }
