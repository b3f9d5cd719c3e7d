"""Synthetic noise for WavLM's noise mixing: white, pink and brown clips at 16 kHz, plus their manifest.

    python tools/make_noise_manifest.py --out DIR [--seconds 60] [--clips 30] [--seed 0]

Writes DIR/audio/{colour}_{i:03d}.wav (16-bit PCM) and DIR/train.tsv (every clip; valid.tsv is empty), so
`mixing.noise_manifest: DIR` works. `--seconds` is the total over all clips, split evenly; colours take turns.
A colour's power spectrum falls as 1/f^exponent: white 0, pink 1, brown 2 (see ssl_audio/demo/coloured_noise.py);
every clip's RMS is CLIP_RMS_DBFS. Real recordings (MUSAN, DNS) are the better choice for training; these are for
tests and demos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from ssl_audio.audio import MIN_SAMPLES, SAMPLE_RATE
from ssl_audio.data.manifest import build_manifests
from ssl_audio.demo.coloured_noise import CLIP_RMS_DBFS, COLOURS, coloured_noise

# The noise itself lives in ssl_audio.demo.coloured_noise; its names stay importable from here.
__all__ = ["CLIP_RMS_DBFS", "COLOURS", "coloured_noise", "write_noise", "main"]


def write_noise(out: Path, *, seconds: float, clips: int, seed: int) -> dict:
    """Write the clips and the manifests; returns build_manifests' summary plus the clip count per colour."""
    clip_samples = int(seconds * SAMPLE_RATE) // clips
    if clip_samples < MIN_SAMPLES:
        raise ValueError(f"{seconds} s over {clips} clips gives {clip_samples} samples per clip, under {MIN_SAMPLES}")
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    for i in range(clips):
        colour = names[i % len(names)]
        wave = coloured_noise(clip_samples, COLOURS[colour], rng)
        sf.write(audio / f"{colour}_{i:03d}.wav", wave, SAMPLE_RATE, subtype="PCM_16")
    summary = build_manifests([audio], out, valid_fraction=0.0, seed=seed)
    summary["clips_per_colour"] = {c: len(range(j, clips, len(names))) for j, c in enumerate(names)}
    summary["clip_seconds"] = clip_samples / SAMPLE_RATE
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for audio/ and train.tsv")
    parser.add_argument("--seconds", type=float, default=60.0, help="total seconds of noise over all clips")
    parser.add_argument("--clips", type=int, default=30, help="number of clips; colours take turns")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.seconds <= 0:
        parser.error(f"--clips must be >= 1 and --seconds > 0, got {args.clips} and {args.seconds}")
    summary = write_noise(args.out, seconds=args.seconds, clips=args.clips, seed=args.seed)
    colours = ", ".join(f"{n} {c}" for c, n in summary["clips_per_colour"].items())
    print(
        f"wrote {summary['train_files']} clips of {summary['clip_seconds']:.2f} s ({colours}) at "
        f"{CLIP_RMS_DBFS:.0f} dBFS RMS under {args.out / 'audio'}; manifest {args.out / 'train.tsv'} "
        f"({summary['train_hours'] * 3600:.1f} s)"
    )


if __name__ == "__main__":
    main()
