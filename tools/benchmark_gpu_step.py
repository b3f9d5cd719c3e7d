"""GPU training-step check: our BASE wav2vec 2.0 and HuBERT, fp32 and bf16 autocast, on one CUDA device.

    python tools/benchmark_gpu_step.py [--batch 8] [--seconds 15] [--steps 8] [--warmup 3]

One step = zero_grad + forward + loss + backward + AdamW step on a random batch in which every other row is
padded to two thirds of its length. Prints the median step time, audio-seconds per second and peak memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.models.hubert import Hubert, hubert_base
from ssl_audio.models.wav2vec2 import Wav2Vec2, wav2vec2_base

NUM_CLASSES = 500  # HuBERT iteration 2, labels at 50 Hz


def time_steps(step, steps: int, warmup: int) -> float:
    """Median wall seconds of `steps` calls after `warmup` untimed ones, synchronising around each."""
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step(i)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmark_gpu_step: no CUDA device")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    samples = round(args.seconds * SAMPLE_RATE)
    wave = 0.1 * torch.randn(args.batch, samples, device=device)
    lengths = torch.full((args.batch,), samples, device=device)
    lengths[1::2] = samples * 2 // 3
    frames = (samples - 400) // 320 + 1
    labels = torch.randint(0, NUM_CLASSES, (args.batch, frames), device=device)
    audio_seconds = args.batch * samples / SAMPLE_RATE
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {args.batch} x {args.seconds:g} s\n")
    print("| model | precision | median step | audio-s per s | peak memory |\n|---|---|---:|---:|---:|")
    w2v, hub = wav2vec2_base(), hubert_base(num_classes=(NUM_CLASSES,), label_rate=50.0)
    builds = {
        "wav2vec2 BASE": (lambda: Wav2Vec2(replace(w2v, encoder=replace(w2v.encoder, layerdrop=0.0))),
                          lambda m, i: m(wave, lengths, step=i)),
        "HuBERT BASE": (lambda: Hubert(replace(hub, encoder=replace(hub.encoder, layerdrop=0.0))),
                        lambda m, i: m(wave, lengths, [labels], step=i)),
    }  # fmt: skip
    for bf16 in (False, True):
        for name, (build, forward) in builds.items():
            torch.manual_seed(0)
            model = build().to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
            torch.cuda.reset_peak_memory_stats()

            def step(i: int, model=model, forward=forward, optimizer=optimizer, bf16=bf16, name=name) -> None:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    out = forward(model, i)
                out.mean_loss.backward()
                optimizer.step()
                if not torch.isfinite(out.loss):
                    raise RuntimeError(f"{name}: non-finite loss at step {i}")

            seconds = time_steps(step, args.steps, args.warmup)
            peak = torch.cuda.max_memory_allocated() / 2**30
            precision = "bf16 autocast" if bf16 else "fp32"
            rate = audio_seconds / seconds
            print(f"| {name} | {precision} | {seconds * 1000:.0f} ms | {rate:,.0f} | {peak:.1f} GiB |")
            del model, optimizer


if __name__ == "__main__":
    main()
