"""CTC pieces the fine-tuning model needs: the loss in fp32, feasibility of a target, ids to text, edit counts
(decoding: ctc_decoding.py).

Shapes: B batch, T frames, V vocabulary (id 0 = blank), L target tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchaudio.functional import edit_distance

BLANK = 0  # transformers' Wav2Vec2CTCTokenizer: "<pad>" is id 0 and doubles as the CTC blank
WORD_DELIMITER = "|"  # transformers' word_delimiter_token: a space in the transcript
# transformers' Wav2Vec2CTCTokenizer layout (finetune/vocab.py), ids 0-3; the seq2seq decoder runs from <s> to </s>
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


def target_lengths(targets: Tensor, pad: int) -> Tensor:
    """(B, L) padded targets -> (B,) tokens before the first `pad` (targets never contain `pad` inside)."""
    return (targets != pad).sum(dim=1)


def frames_needed(targets: Tensor, lengths: Tensor) -> Tensor:
    """(B,) fewest frames CTC needs for each target: its tokens plus one blank between each repeated pair."""
    if targets.shape[1] < 2:
        return lengths
    inside = torch.arange(1, targets.shape[1], device=targets.device)[None, :] < lengths[:, None]  # (B, L-1)
    repeats = ((targets[:, 1:] == targets[:, :-1]) & inside).sum(dim=1)
    return lengths + repeats


def ctc_loss_sum(logits: Tensor, frame_lengths: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """(B,) CTC loss per row from (B, T, V) logits, with log-softmax and loss in fp32 (fp16/bf16 logits
    underflow in the forward-backward sums) and zero_infinity (an infeasible row gives 0, not Inf)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
        return torch.nn.functional.ctc_loss(
            log_probs,
            targets.clamp(min=0),
            frame_lengths,
            lengths,
            blank=BLANK,
            reduction="none",
            zero_infinity=True,
        )


def ids_to_text(ids: list[int], vocab: tuple[str, ...], *, group_tokens: bool = True) -> str:
    """Token ids -> text exactly as transformers' Wav2Vec2CTCTokenizer.decode (its defaults): repeated tokens
    grouped (group_tokens; pass False for ids a decoder already collapsed, or for references), the pad/blank
    (id 0) dropped, the word delimiter a space, the ends stripped. Other specials (<unk>, <s>) stay as text, and
    "| <pad> |" is two spaces: the pipeline prints the same."""
    for i in ids:
        if not 0 <= i < len(vocab):
            raise ValueError(f"token id {i} is outside the vocabulary of {len(vocab)}")
    tokens = [vocab[i] for i in ids]
    if group_tokens:
        tokens = [token for k, token in enumerate(tokens) if k == 0 or token != tokens[k - 1]]
    pad = vocab[BLANK]
    return "".join(" " if t == WORD_DELIMITER else t for t in tokens if t != pad).strip()


def edit_counts(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Character and word edit distances summed over rows, and the reference lengths (CER, WER = ratio)."""
    char_errors = chars = word_errors = words = 0
    for ref, hyp in zip(refs, hyps):
        char_errors += edit_distance(list(ref), list(hyp))
        chars += len(ref)
        word_errors += edit_distance(ref.split(), hyp.split())
        words += len(ref.split())
    return {"char_errors": char_errors, "chars": chars, "word_errors": word_errors, "words": words}
