"""AdamW step time: torch's default, foreach and fused implementations on the same parameters, in one run.

    python tools/benchmark_adamw.py [--params 94e6] [--threads 1] [--steps 3]

The training loop uses the fused one (ssl_audio/train/optimizer.py); BASE models have 94-95 M parameters.
"""

from __future__ import annotations

import argparse
import time

import torch

TENSOR = 768 * 768  # elements per parameter tensor: a BASE projection


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, default=94e6, help="parameters in all (fp32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per implementation, after one warm-up")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(TENSOR, generator=gen)) for _ in range(max(1, round(args.params / TENSOR)))
    ]
    for p in params:
        p.grad = 1e-3 * torch.randn(TENSOR, generator=gen)
    count = sum(p.numel() for p in params)
    print(f"AdamW on {count / 1e6:.1f} M fp32 parameters, {args.threads} thread(s), median of {args.steps} steps")
    times = {}
    for name, options in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.AdamW(params, lr=1e-4, **options)
        optimizer.step()  # allocates the moments
        seconds = []
        for _ in range(args.steps):
            start = time.perf_counter()
            optimizer.step()
            seconds.append(time.perf_counter() - start)
        times[name] = sorted(seconds)[len(seconds) // 2]
    for name, t in times.items():
        print(f"{name:8s} {t:.3f} s per step   default / {name}: {times['default'] / t:.2f}x")


if __name__ == "__main__":
    main()
