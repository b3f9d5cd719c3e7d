"""Which tiny wav2vec 2.0 settings leave the chance plateau: a sweep behind recipes/tiny_wav2vec2.yaml.

    python tools/sweep_tiny_wav2vec2.py --audio audio.npz --updates 1500 \
        --variant '{"name": "base"}' \
        --variant '{"name": "no_penalty", "lr": 0.001, "config": {"feature_penalty_weight": 0.0}}'

    python tools/sweep_tiny_wav2vec2.py --pack data/demo/manifest/train.tsv --minutes 15 --out audio.npz

A bare loop (AdamW, linear warm-up and decay, clipping at 5) over random 3 s crops, 8 per batch, from a
small pack of int16 audio (`--pack` makes one from a manifest; it travels to a GPU machine easily). Each
variant overrides the tiny preset's fields (`config`), the peak `lr` and `warmup`; `"_codevectors":
"normal"` re-initialises the codebook from N(0, 1), `"identity"` replaces the quantised targets with the
quantiser's input. Prints the contrastive loss and accuracy over the last 100 updates against chance
ln(K + 1) and 1 / (K + 1). Run variants as separate processes to use a GPU fully.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.models.step_context import StepContext
from ssl_audio.models.wav2vec2 import Wav2Vec2

CROP, BATCH = 48000, 8  # the recipe's 3 s crops and 24 s batches


def pack(manifest: Path, minutes: float, out: Path, seed: int = 0) -> None:
    """A shuffled `minutes` of the manifest's audio as int16 arrays in one compressed npz."""
    from ssl_audio.audio import load_audio
    from ssl_audio.data.manifest import load_manifest

    table = load_manifest(manifest)
    order = np.random.default_rng(seed).permutation(len(table))
    waves, total = [], 0
    for index in order:
        wave = load_audio(table.audio_path(int(index))).reshape(-1).numpy()
        waves.append((np.clip(wave, -1, 1) * 32767).astype(np.int16))
        total += len(wave)
        if total >= minutes * 60 * 16000:
            break
    np.savez_compressed(out, *waves)
    print(f"packed {len(waves)} files, {total / 16000 / 60:.1f} min, into {out}")


def crops(waves: list[torch.Tensor], rng: np.random.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    picks = rng.choice(len(waves), BATCH, replace=False)
    chosen = []
    for i in picks:
        start = int(rng.integers(0, max(1, len(waves[i]) - CROP + 1)))
        chosen.append(waves[i][start : start + CROP])
    lengths = torch.tensor([len(c) for c in chosen])
    batch = torch.zeros(BATCH, int(lengths.max()))
    for j, c in enumerate(chosen):
        batch[j, : len(c)] = c
    return batch.to(device), lengths.to(device)


def build(config: dict, device: torch.device) -> Wav2Vec2:
    config = dict(config)
    patch = config.pop("_codevectors", None)
    model = Wav2Vec2(family_config(ModelConfig(family="wav2vec2", preset="tiny", config=config))).to(device)
    if patch == "normal":
        torch.nn.init.normal_(model.quantizer.codevectors)
    elif patch == "identity":  # continuous targets (the tiny preset's code_dim equals the extractor's channels)
        forward = model.quantizer.forward

        def identity(x, padding_mask=None, generator=None):  # noqa: ANN001, ANN202
            return dataclasses.replace(forward(x, padding_mask, generator), quantized=x)

        model.quantizer.forward = identity
    elif patch is not None:
        raise ValueError(f"_codevectors must be 'normal' or 'identity', got {patch!r}")
    return model


def run(variant: dict, waves: list[torch.Tensor], updates: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    lr, warmup = variant.get("lr", 2e-3), variant.get("warmup", 40)
    model = build(variant.get("config", {}), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / warmup if s < warmup else max(0.0, (updates - s) / (updates - warmup))
    )
    rng, history, start = np.random.default_rng(0), [], time.time()
    for step in range(updates):
        out = model(*crops(waves, rng, device), context=StepContext(step=step))
        optimizer.zero_grad()
        (out.loss / out.sample_size.clamp(min=1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        frames = out.sample_size.item()
        history.append((out.losses["contrastive"].item() / frames, out.metrics["accuracy"].item()))
    loss, accuracy = np.mean(history[-100:], axis=0)
    chance = math.log(1 + model.cfg.num_negatives)
    return dict(name=variant["name"], loss=loss, chance=chance, accuracy=accuracy, seconds=time.time() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, help="npz of int16 waveforms (from --pack)")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--variant", action="append", default=[], help="JSON: name, config, lr, warmup")
    parser.add_argument("--pack", type=Path, help="manifest (train.tsv) to pack into --out instead of sweeping")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.pack:
        if args.out is None:
            parser.error("--pack needs --out")
        pack(args.pack, args.minutes, args.out)
        return
    if args.audio is None or not args.variant:
        parser.error("give --audio and at least one --variant (or --pack)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = np.load(args.audio)
    waves = [torch.from_numpy(data[k].astype(np.float32) / 32768.0) for k in data.files]
    waves = [w for w in waves if len(w) >= 16000]
    print("| variant | contrastive loss (last 100) | ln(K+1) | accuracy | seconds |\n|---|---:|---:|---:|---:|")
    for variant in map(json.loads, args.variant):
        r = run(variant, waves, args.updates, device)
        print(f"| {r['name']} | {r['loss']:.3f} | {r['chance']:.3f} | {r['accuracy']:.3f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
