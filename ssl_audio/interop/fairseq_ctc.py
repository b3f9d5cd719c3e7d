"""fairseq fine-tuned wav2vec 2.0 / HuBERT CTC checkpoints (wav2vec_ctc: `w2v_encoder.w2v_model.*` + the
projection `w2v_encoder.proj`) to our `finetune` model with head ctc.

The vocabulary is not in the checkpoint: it is the task's target dictionary, fairseq's Dictionary over
dict.ltr.txt ("SYMBOL COUNT" per line): ids 0-3 are <s>, <pad>, </s>, <unk>, then the file's symbols in order,
then any "madeupword" fillers the dictionary was padded with. fairseq's CTC blank is id 0 (<s>, the bos); ours
and transformers' is named "<pad>" at id 0, so the two names swap (as transformers' own conversion script does)
and the projection's rows keep their order: the logits are fairseq's, row for row.

Fine-tuning settings come from the checkpoint's model config (Wav2Vec2AsrConfig overrides the pretraining
dropouts, masks and layerdrop); the trunk's architecture from its w2v_args (interop/fairseq.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from ssl_audio.interop.fairseq import load_checkpoint, plain_config, read_fairseq_checkpoint
from ssl_audio.interop.imported import Imported
from ssl_audio.models.finetune import FineTuneConfig
from ssl_audio.nn.masking import MaskingConfig

PROJECTION = "w2v_encoder.proj."
FAIRSEQ_SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0-3 under our names: fairseq's <s> (the blank) is "<pad>"
DICT_NAME = "dict.ltr.txt"


def is_fine_tuned(checkpoint: dict[str, Any]) -> bool:
    return any(k.startswith(PROJECTION) for k in checkpoint.get("model", {}))


def read_dictionary(path: Path) -> tuple[str, ...]:
    """dict.ltr.txt's symbols in file order (a trailing "#fairseq:overwrite" flag allowed)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the dictionary ({getattr(err, 'strerror', None) or err})") from None
    symbols = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.rstrip().removesuffix("#fairseq:overwrite").split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'SYMBOL COUNT', got {line!r}")
        symbols.append(fields[0])
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"{path}: repeated symbols")
    return tuple(symbols)


def fairseq_vocab(symbols: tuple[str, ...], size: int, *, source: str) -> tuple[str, ...]:
    """Our vocabulary for a projection of `size` rows over fairseq's Dictionary of `symbols`."""
    vocab = FAIRSEQ_SPECIAL + symbols
    if size < len(vocab):
        raise ValueError(f"{source}: {PROJECTION}weight has {size} rows, the dictionary needs {len(vocab)}")
    # fairseq pads a dictionary to a multiple of 8 with madeupword0000...; named <...> so they never print.
    return vocab + tuple(f"<madeupword{i:04d}>" for i in range(size - len(vocab)))


def finetune_config(outer: dict[str, Any], trunk: Any, vocab: tuple[str, ...]) -> FineTuneConfig:
    """The fine-tuning settings of a Wav2Vec2AsrConfig (`outer`) over the pretrained trunk config."""
    get = outer.get
    encoder = replace(
        trunk.encoder,
        dropout=float(get("dropout", 0.0)),
        attention_dropout=float(get("attention_dropout", 0.0)),
        activation_dropout=float(get("activation_dropout", 0.0)),
        projection_dropout=float(get("dropout_input", 0.0)),
        layerdrop=float(get("layerdrop", 0.0)),
    )
    masked = bool(get("apply_mask", False))
    masking = MaskingConfig(
        mask_prob=float(get("mask_prob", 0.5)) if masked else 0.0,
        mask_length=int(get("mask_length", 10)),
        channel_prob=float(get("mask_channel_prob", 0.0)) if masked else 0.0,
        channel_length=int(get("mask_channel_length", 10)),
    )
    return FineTuneConfig(
        encoder=encoder,
        masking=masking,
        head="ctc",
        vocab=vocab,
        head_dropout=float(get("final_dropout", 0.0)),
        freeze_frontend=float(get("feature_grad_mult", 0.0)) == 0.0,
        freeze_updates=int(get("freeze_finetune_updates", 0)),
    )


def _outer_model(checkpoint: dict[str, Any]) -> dict[str, Any]:
    if checkpoint.get("cfg") is not None:
        return plain_config(checkpoint["cfg"]).get("model") or {}
    return plain_config(checkpoint.get("args")) or {}


def read_fairseq_ctc(path: str | Path, *, dictionary: str | Path | None = None, trust_pickle: bool = False) -> Imported:
    """A fairseq fine-tuned CTC checkpoint (with its dict.ltr.txt; default: the one next to it) as our model."""
    path = Path(path)
    checkpoint = load_checkpoint(path, trust_pickle=trust_pickle)
    return imported_ctc(checkpoint, Path(dictionary) if dictionary else path.with_name(DICT_NAME), source=str(path))


def imported_ctc(checkpoint: dict[str, Any], dictionary: Path, *, source: str) -> Imported:
    state: dict[str, Tensor] = checkpoint["model"]
    if f"{PROJECTION}weight" not in state:
        raise ValueError(f"{source}: no {PROJECTION}weight: not a fine-tuned CTC checkpoint")
    if not dictionary.is_file():
        raise ValueError(f"{dictionary}: no such dictionary; pass the fine-tuning data's dict.ltr.txt (--dict)")
    trunk = read_fairseq_checkpoint(checkpoint, source=source)
    projection = {k[len(PROJECTION) :]: v for k, v in state.items() if k.startswith(PROJECTION)}
    vocab = fairseq_vocab(read_dictionary(dictionary), int(projection["weight"].shape[0]), source=source)
    cfg = finetune_config(_outer_model(checkpoint), trunk.config, vocab)
    ours = {k: v for k, v in trunk.state.items() if k.startswith(("encoder.", "masker."))}
    ours.update({f"head.proj.{k}": v for k, v in projection.items()})
    dropped = tuple(k for k in trunk.dropped if not k.startswith(PROJECTION))
    return Imported(family="finetune", config=cfg, state=ours, source=source, dropped=dropped, notes=trunk.notes)
