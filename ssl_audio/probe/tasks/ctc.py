"""ctc: characters. A linear CTC head over frames (blank 0), best-path decoding; CER, WER and their S/D/I counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from ssl_audio.data.probe_table import ProbeTable
from ssl_audio.probe.config import ProbeConfig
from ssl_audio.probe.featurizer import Featurizer
from ssl_audio.probe.heads import FrameBank, ctc_greedy, pad_frames
from ssl_audio.probe.metrics import char_errors, word_errors
from ssl_audio.probe.task import Outcome, ProbeTask, Targets
from ssl_audio.probe.tasks.labels import non_empty
from ssl_audio.probe.tasks.training import EVAL_BATCH, fit_head, frame_stats, mixed_weights, new_head


def targets(cfg: ProbeConfig, featurizer: Featurizer, train: ProbeTable, test: ProbeTable) -> Targets:
    """Characters of the training transcripts (space included, case kept) are the vocabulary."""
    column = cfg.label_column
    train_text, test_text = non_empty(train, column), non_empty(test, column)
    vocabulary = tuple(sorted(set("".join(train_text))))
    ids = {char: i + 1 for i, char in enumerate(vocabulary)}  # 0 is the blank
    for i, text in enumerate(test_text):
        unknown = sorted(set(text) - set(ids))
        if unknown:
            raise ValueError(
                f"{test.where(i)}: character(s) {''.join(unknown)!r} of the transcript never occur in the "
                f"training transcripts ({train.source}), so a CTC head cannot emit them"
            )
    return Targets(
        column=column,
        names=vocabulary,
        train=[[ids[c] for c in text] for text in train_text],
        test=[[ids[c] for c in text] for text in test_text],
        test_labels=test_text,
    )


def check_lengths(
    targets: Targets, train_table: ProbeTable, train: list[np.ndarray], test_table: ProbeTable, test: list[np.ndarray],
    frame_rate: float,
) -> None:  # fmt: skip
    """CTC needs a frame per character plus a blank between repeated characters (in training; a short test
    utterance only costs errors)."""
    for i, (feats, ids) in enumerate(zip(train, targets.train)):
        needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if feats.shape[1] < needed:
            raise ValueError(
                f"{train_table.where(i)}: {feats.shape[1]} frames cannot emit a {len(ids)}-character transcript"
            )


def evaluate(
    cfg: ProbeConfig, train: list[np.ndarray], test: list[np.ndarray], targets: Targets, device: torch.device
) -> Outcome:
    """Linear CTC head over frames; greedy decoding; character and word error rates."""
    mean, std = frame_stats(train)
    head = new_head(cfg, mean, std, len(targets.names) + 1, device)
    ctc_loss = nn.CTCLoss(blank=0, zero_infinity=True)

    bank = FrameBank(train)  # once: each batch is then one gather

    def batch_loss(idx: Tensor) -> Tensor:
        x, lengths = bank.batch(idx, device)  # (B, T, K, D), (B,)
        log_probs = head(x).log_softmax(dim=-1).transpose(0, 1)  # (T, B, C)
        ids = [targets.train[i] for i in idx]
        flat = torch.tensor([c for row in ids for c in row], device=device)
        return ctc_loss(log_probs, flat, lengths, torch.tensor([len(row) for row in ids], device=device))

    losses = fit_head(cfg, head, len(train), batch_loss)
    hypotheses = []
    with torch.no_grad():
        for start in range(0, len(test), EVAL_BATCH):
            x, lengths = pad_frames(test[start : start + EVAL_BATCH], device)
            best = head(x).argmax(dim=-1).cpu()  # (B, T)
            for row, n in zip(best, lengths.tolist()):
                hypotheses.append("".join(targets.names[c - 1] for c in ctc_greedy(row[:n])))
    refs = targets.test_labels
    chars, words = char_errors(refs, hypotheses), word_errors(refs, hypotheses)
    metrics = {"cer": chars.rate, "wer": words.rate}
    examples = [{"ref": r, "hyp": h} for r, h in zip(refs[:5], hypotheses[:5])]
    # hits, substitutions, deletions, insertions: what kind of errors the rates are made of
    details = {"examples": examples, "cer_counts": dataclasses.asdict(chars), "wer_counts": dataclasses.asdict(words)}
    return Outcome(metrics=metrics, losses=losses, details=details, layer_weights=mixed_weights(head, mean))


TASK = ProbeTask(
    name="ctc",
    headline="cer",
    label_column="transcript",
    epochs=100,
    lr=1e-2,
    targets=targets,
    evaluate=evaluate,
    check_features=check_lengths,
)
