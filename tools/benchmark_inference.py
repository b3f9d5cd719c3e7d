"""Inference benchmark: encoder features (probe features, dump-features) in fp32 against bf16 autocast.

    python tools/benchmark_inference.py [--preset base|tiny] [--seconds 10] [--steps 5] [--threads 2]

Runs `encoder_layer_frames` (what `ssl-audio probe` and `dump-features --dtype` call) on one random utterance,
fp32 and bf16 taking turns (one untimed round first), so that load from other processes falls on both alike.
Prints the median seconds per utterance of each, the ratio (fp32 time / bf16 time: above 1, bf16 is faster) and
the norm-wise relative difference of the last layer's features. bf16 pays only on a CPU with bf16 units
(avx512_bf16 or AMX) or a GPU; elsewhere autocast emulates it and it is slower.
"""

from __future__ import annotations

# ruff: noqa: E402
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as import ssl_audio does: no spinning threads on a busy CPU

import argparse
import statistics
import time

import torch

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.features import encoder_layer_frames
from ssl_audio.models.encoder import Encoder, EncoderConfig
from ssl_audio.models.wav2vec2 import tiny_encoder
from ssl_audio.train.hardware import bf16_units

PRESETS = {"base": EncoderConfig, "tiny": tiny_encoder}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="base")
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length")
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (each: one fp32 and one bf16 pass)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = Encoder(PRESETS[args.preset]()).eval().requires_grad_(False)
    layers = tuple(range(encoder.cfg.num_layers + 1))
    wave = torch.randn(round(args.seconds * SAMPLE_RATE)) * 0.1
    device = torch.device("cpu")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    outputs: dict[str, torch.Tensor] = {}
    for round_ in range(args.steps + 1):
        for dtype in times:
            start = time.perf_counter()
            outputs[dtype] = encoder_layer_frames(encoder, wave, layers, device, dtype)
            if round_ > 0:  # the first round warms up
                times[dtype].append(time.perf_counter() - start)
    median = {dtype: statistics.median(t) for dtype, t in times.items()}
    dim = encoder.cfg.dim
    last = {dtype: out[:, -dim:] for dtype, out in outputs.items()}
    relative = float((last["fp32"] - last["bf16"]).norm() / last["fp32"].norm())
    print(f"CPU bf16 units: {bf16_units() or 'none'}; threads {args.threads}; load average {os.getloadavg()}")
    fp32, bf16 = median["fp32"], median["bf16"]
    print(f"{args.preset} encoder, {args.seconds:g} s utterance, {len(layers)} hidden states, median of {args.steps}:")
    print(f"  fp32 {fp32:.3f} s, bf16 {bf16:.3f} s: fp32/bf16 = {fp32 / bf16:.2f}x")
    print(f"  last layer, bf16 vs fp32: norm-wise relative difference {relative:.2e}")


if __name__ == "__main__":
    main()
