"""Frame features shared by clustering (dump-features) and probing (the featurizer).

Sources: 39-d kaldi MFCC + deltas + delta-deltas (HuBERT iteration 1), 80-d kaldi log-mel (SUPERB's FBANK
baseline), both 25 ms windows every 10 ms, and the hidden states of an encoder's layers. Long audio is
framed `CHUNK_SECONDS` at a time with `CONTEXT_SECONDS` of context on both sides (`chunked_frames`).
This module knows nothing of shards, caches or probe tables: those stay with their callers.

Shapes: S samples at 16 kHz, T frames, K layers, D feature dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.models.chunked import frames_in_chunks
from ssl_audio.models.encoder import Encoder

KALDI_RATE, KALDI_WINDOW, KALDI_HOP = 100.0, 400, 160  # kaldi defaults at 16 kHz: 25 ms windows every 10 ms
MFCC_DIM = 39  # 13 cepstra, their deltas and delta-deltas
LOGMEL_BINS = 80
CHUNK_SECONDS, CONTEXT_SECONDS = 30.0, 2.0  # long audio is encoded 30 s at a time with 2 s of context


def mfcc_features(wave: Tensor) -> Tensor:
    """(S,) -> (T, 39): 13 kaldi MFCCs (no energy) with deltas and delta-deltas, as HuBERT's iteration 1."""
    mfcc = kaldi.mfcc(wave[None], sample_frequency=SAMPLE_RATE, use_energy=False)  # (T, 13)
    deltas = AF.compute_deltas(mfcc.T)  # (13, T)
    return torch.cat([mfcc, deltas.T, AF.compute_deltas(deltas).T], dim=1)


def logmel_features(wave: Tensor) -> Tensor:
    """(S,) -> (T, 80) kaldi log mel filterbank energies at 100 Hz (no dither: deterministic)."""
    return kaldi.fbank(wave[None], sample_frequency=SAMPLE_RATE, num_mel_bins=LOGMEL_BINS, dither=0.0)


INFERENCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # --dtype of probe and dump-features


@torch.no_grad()
def encoder_layer_frames(
    encoder: Encoder, segment: Tensor, layers: Sequence[int], device: torch.device, dtype: str = "fp32"
) -> Tensor:
    """(S',) -> (T', K * D) float32 on the CPU: hidden states `layers` (0 = the transformer input) side by side.

    The encoder runs only up to the deepest layer asked for; it is used as given (the callers put it in eval
    mode), without gradients. `dtype="bf16"` runs it under bfloat16 autocast (matmuls and convolutions in bf16,
    norms and softmax in fp32), which a CPU with bf16 units (avx512_bf16, AMX) or a GPU runs faster."""
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        out = encoder(segment[None].to(device), num_layers=max(layers))
    # the segment's own frames: Whisper pads every clip to its 30 s window, and says how many frames are its own
    frames = out.hidden_states[0].shape[1] if out.lengths is None else int(out.lengths[0])
    stacked = torch.stack([out.hidden_states[k][0, :frames] for k in layers], dim=1)  # (T', K, D)
    return stacked.flatten(1).float().cpu()


def chunked_frames(
    fn: Callable[[Tensor], Tensor],
    wave: Tensor,
    *,
    window: int,
    hop: int,
    chunk_seconds: float = CHUNK_SECONDS,
    context_seconds: float = CONTEXT_SECONDS,
    max_samples: int | None = None,
) -> Tensor:
    """fn((S',) segment) -> (T', D) frames; returns (T, D) of the whole `wave` (S,), framed in chunks of
    `chunk_seconds` with `context_seconds` on each side (see `frames_in_chunks`), chunks shortened so that one
    with its context fits `max_samples` (an encoder's longest input: Whisper's 30 s window)."""
    chunk, context = round(chunk_seconds * SAMPLE_RATE), round(context_seconds * SAMPLE_RATE)
    if max_samples is not None and wave.shape[-1] > max_samples:  # shorter audio is one segment anyway
        if max_samples <= 2 * context + window:
            raise ValueError(f"an encoder taking {max_samples} samples leaves no room for {context} of context")
        chunk = min(chunk, (max_samples - 2 * context - window) // hop * hop)
    return frames_in_chunks(fn, wave, window=window, hop=hop, chunk_samples=chunk, context_samples=context)
