"""Using a fine-tuned step folder: transcribe (CTC or seq2seq; greedy or beam) or classify audio files of any length.

Long audio goes through the chunk + overlap stitching of models/chunked.py (30 s chunks, 2 s of context each
side): every frame of the encoder output comes from a chunk where it has context, so the frames, and the text,
are those of one pass over the whole file up to the context's reach.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ssl_audio.audio import load_audio
from ssl_audio.features import chunked_frames
from ssl_audio.models.ctc import ids_to_text
from ssl_audio.models.finetune import FineTune
from ssl_audio.models.loading import load_model


def load_finetuned(step_dir: str | Path) -> FineTune:
    model, model_cfg = load_model(step_dir)
    if not isinstance(model, FineTune):
        raise ValueError(f"{step_dir}: a {model_cfg.family} checkpoint, not a fine-tuned one (ssl-audio finetune)")
    return model


@torch.no_grad()
def encoded_frames(model: FineTune, wave: Tensor) -> Tensor:
    """(S,) -> (T, D) encoder output of the whole file, chunked and stitched."""

    def encode(segment: Tensor) -> Tensor:
        out, _, _ = model.encode(segment[None], None)
        return out[0]

    return chunked_frames(encode, wave, window=model.encoder.window, hop=model.encoder.hop)


@torch.no_grad()
def transcribe_wave(model: FineTune, wave: Tensor, *, beam: int = 1) -> str:
    """beam 1: greedy (CTC best path, or greedy attention for seq2seq); more: beam search of that width."""
    frames = encoded_frames(model, wave)[None]  # (1, T, D)
    ids = model.transcribe_ids(frames, torch.tensor([frames.shape[1]]), beam=beam)[0]
    return ids_to_text(ids, model.cfg.vocab, group_tokens=False)  # the decoders already collapsed repeats


@torch.no_grad()
def classify_wave(model: FineTune, wave: Tensor) -> list[tuple[str, float]]:
    """Classes with their probabilities: the best one (single-label), or all above 0.5 (multilabel)."""
    frames = encoded_frames(model, wave)
    logits = model.head(frames[None], None)[0].float()  # (classes,)
    names = model.cfg.vocab
    if model.cfg.multilabel:
        probs = torch.sigmoid(logits)
        return [(names[i], float(probs[i])) for i in torch.nonzero(probs > 0.5).flatten().tolist()]
    probs = torch.softmax(logits, dim=0)
    best = int(probs.argmax())
    return [(names[best], float(probs[best]))]


def run_files(step_dir: str | Path, files: Sequence[str], *, task: str, beam: int = 1) -> Iterator[tuple[str, str]]:
    """(file, printed result) for each file, with a progress bar over the files."""
    model = load_finetuned(step_dir)
    command = {"ctc": "transcribe", "seq2seq": "transcribe", "classify": "classify"}[model.cfg.head]
    if command != task:
        raise ValueError(f"{step_dir}: a {model.cfg.head} model; use `ssl-audio {command}`")
    for path in tqdm(files, desc=task, unit="file", disable=len(files) < 2):
        wave = load_audio(path)
        if task == "transcribe":
            yield path, transcribe_wave(model, wave, beam=beam)
        else:
            yield path, " ".join(f"{name} ({p:.3f})" for name, p in classify_wave(model, wave))
