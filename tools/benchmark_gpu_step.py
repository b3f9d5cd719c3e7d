"""GPU training-step check: our BASE wav2vec 2.0 and HuBERT, fp32 and bf16 autocast, on one CUDA device.

    python tools/benchmark_gpu_step.py [--batch 8] [--seconds 15] [--steps 8] [--warmup 3]

One step = zero_grad + forward + loss + backward + AdamW step on a random batch in which every other row is
padded to two thirds of its length. Prints the median step time, audio-seconds per second and peak memory.
The models and their losses come from tools/bench/ours.py, as in tools/benchmark_step.py.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from bench import ours
from bench.common import Batch, Built, frame_count, no_layerdrop

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.models.hubert import HubertConfig, hubert_base
from ssl_audio.models.wav2vec2 import Wav2Vec2Config, wav2vec2_base
from ssl_audio.train.config import OptimConfig

LEARNING_RATE = 1e-5  # warm-up sized: the step time does not depend on it (see tools/benchmark_step.py)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[int], None], steps: int, warmup: int, device: torch.device) -> float:
    """Median wall seconds of `steps` calls after `warmup` untimed ones, synchronising around each."""
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        step(i)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_batch(device: torch.device, batch: int, samples: int, num_classes: int, frames: int) -> Batch:
    wave = 0.1 * torch.randn(batch, samples, device=device)
    lengths = torch.full((batch,), samples, device=device)
    lengths[1::2] = samples * 2 // 3
    labels = torch.randint(0, num_classes, (batch, frames), device=device)
    return Batch(wave=wave, lengths=lengths, labels=labels, frames=frames)


def run(
    device: torch.device,
    batch_size: int,
    seconds: float,
    steps: int,
    warmup: int,
    *,
    w2v: Wav2Vec2Config | None = None,
    hub: HubertConfig | None = None,
) -> None:
    """The table, on `device` (main() insists on CUDA; any device runs it), for BASE unless configs are given."""
    w2v = w2v or no_layerdrop(wav2vec2_base())
    hub = hub or no_layerdrop(hubert_base())  # 500 classes at 50 Hz
    samples = round(seconds * SAMPLE_RATE)
    batch = random_batch(device, batch_size, samples, hub.num_classes[0], frame_count(hub.encoder, samples))
    name = torch.cuda.get_device_name() if device.type == "cuda" else str(device)
    print(f"{name}, torch {torch.__version__}; batch {batch_size} x {seconds:g} s\n")
    print("| model | precision | median step | audio-s per s | peak memory |\n|---|---|---:|---:|---:|")
    builds: dict[str, Callable[[], Built]] = {
        "wav2vec2 BASE": lambda: ours.build_wav2vec2(w2v, batch),
        "HuBERT BASE": lambda: ours.build_hubert(hub, batch),
    }
    adam = OptimConfig()
    for bf16 in (False, True):
        for label, build in builds.items():
            torch.manual_seed(0)
            model, loss_fn, _ = build()
            model.to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=adam.betas, eps=adam.eps)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()

            def step(i: int, loss_fn=loss_fn, optimizer=optimizer, bf16=bf16, label=label) -> None:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_fn(i, None)
                loss.backward()
                optimizer.step()
                if not torch.isfinite(loss):
                    raise RuntimeError(f"{label}: non-finite loss at step {i}")

            step_s = time_steps(step, steps, warmup, device)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            precision = "bf16 autocast" if bf16 else "fp32"
            rate = batch.audio_seconds / step_s
            print(f"| {label} | {precision} | {step_s * 1000:.0f} ms | {rate:,.0f} | {peak:.1f} GiB |")
            del model, optimizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmark_gpu_step: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    run(torch.device("cuda"), args.batch, args.seconds, args.steps, args.warmup)


if __name__ == "__main__":
    main()
