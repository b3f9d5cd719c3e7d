"""Fine-tuned CTC models (family `finetune`, head ctc) to and from transformers' Wav2Vec2ForCTC / HubertForCTC /
WavLMForCTC folders.

Written: config.json (the trunk as hf.py's config_to_hf writes it, plus the CTC fields), model.safetensors (our
`head.proj` as `lm_head`), vocab.json + tokenizer configs (Wav2Vec2CTCTokenizer: "<pad>" = id 0 = the blank, "|"
the word delimiter, as our vocabularies are laid out) and preprocessor_config.json, so that
`transformers.pipeline("automatic-speech-recognition", model=FOLDER)` decodes as `ssl-audio transcribe` does.
Read: any such folder with its lm_head and vocab.json, as a `finetune` model that transcribes or trains further.

The architecture follows the trunk's origin: WavLMForCTC for a relative-bias encoder, else the family of the
checkpoint the run was fine-tuned from (config.yaml's init.checkpoint): HubertForCTC for a HuBERT trunk,
Wav2Vec2ForCTC otherwise (their transformer stacks are the same).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file
from torch import Tensor

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.configs import to_dict
from ssl_audio.interop.hf import config_from_hf, config_to_hf, hf_config, read_weights
from ssl_audio.interop.imported import Imported, gather, preset, resolve_config
from ssl_audio.interop.keymap import TRANSFORMERS_NAMES, KeyTable, encoder_table, export, rename_weight_norm
from ssl_audio.models.ctc import BLANK, WORD_DELIMITER
from ssl_audio.models.finetune import FineTuneConfig, finetune_base
from ssl_audio.models.loading import read_model_config
from ssl_audio.models.registry import ModelConfig
from ssl_audio.nn.masking import MaskingConfig

CTC_ARCHITECTURE = {"wav2vec2": "Wav2Vec2ForCTC", "hubert": "HubertForCTC", "wavlm": "WavLMForCTC"}
VOCAB_FILE = "vocab.json"
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"


def is_ctc_folder(folder: Path) -> bool:
    """A transformers folder whose config.json names a *ForCTC architecture."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return any(str(name).endswith("ForCTC") for name in config.get("architectures") or ())


def _table(prefix: str) -> KeyTable:
    """Our finetune keys -> a *ForCTC model's: the trunk under the base model's attribute, the head as lm_head."""
    return encoder_table(TRANSFORMERS_NAMES, theirs=prefix) + [
        ("masker.mask_embedding", f"{prefix}masked_spec_embed"),
        ("head.proj.", "lm_head."),
    ]


# ---- export ---------------------------------------------------------------------------------------------------


def origin_family(cfg: FineTuneConfig, source: str) -> str:
    """wavlm for a relative-bias trunk; else hubert or wav2vec2 by the family of the run's init.checkpoint."""
    if cfg.encoder.relative_bias:
        return "wavlm"
    try:
        run = yaml.safe_load((Path(source) / "config.yaml").read_text(encoding="utf-8")) or {}
        family = read_model_config((run.get("init") or {})["checkpoint"]).family
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):  # no readable init checkpoint: the default
        family = "wav2vec2"
    return "hubert" if family == "hubert" else "wav2vec2"


def config_to_hf_ctc(cfg: FineTuneConfig, family: str) -> dict[str, Any]:
    """The transformers config fields of a *ForCTC model for our fine-tuning config."""
    trunk = replace(preset(family, "base"), encoder=cfg.encoder)  # config_to_hf reads a pretraining family config
    fields = config_to_hf(family, trunk, architecture=CTC_ARCHITECTURE[family])
    masking = cfg.masking
    fields.update(
        vocab_size=len(cfg.vocab),
        pad_token_id=BLANK,  # transformers' CTC loss and tokenizer take the pad id as the blank
        bos_token_id=_index(cfg.vocab, BOS),
        eos_token_id=_index(cfg.vocab, EOS),
        final_dropout=cfg.head_dropout,
        ctc_loss_reduction="sum",  # ours sums over the batch, normalised per sentence by the loop
        ctc_zero_infinity=True,
        mask_time_prob=masking.mask_prob,
        mask_time_length=masking.mask_length,
        mask_feature_prob=masking.channel_prob,
        mask_feature_length=masking.channel_length,
        ssl_audio={"family": "finetune", "config": to_dict(cfg)},  # everything transformers has no field for
    )
    return fields


def _index(vocab: tuple[str, ...], token: str) -> int | None:
    return vocab.index(token) if token in vocab else None


def write_hf_ctc(imported: Imported, state: dict[str, Tensor], folder: Path) -> tuple[str, ...]:
    """config.json, model.safetensors, vocab.json, tokenizer and preprocessor configs into `folder` (new).
    Returns the parts of our state left out (none for a CTC model)."""
    from transformers import CONFIG_MAPPING, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    cfg: FineTuneConfig = imported.config  # type: ignore[assignment]
    if cfg.head != "ctc":
        raise ValueError(f"{imported.source}: a {cfg.head} model; only CTC models export to transformers *ForCTC")
    family = origin_family(cfg, imported.source)
    folder.mkdir(parents=True)
    CONFIG_MAPPING[family](**config_to_hf_ctc(cfg, family)).save_pretrained(folder)
    theirs, unmapped = export(state, _table(f"{family}."))
    theirs = rename_weight_norm(theirs, legacy=True)
    owned = {name: value.detach().clone().contiguous() for name, value in theirs.items()}  # safetensors: no sharing
    save_file(owned, folder / "model.safetensors", metadata={"format": "pt"})
    vocab_path = folder / VOCAB_FILE
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(cfg.vocab)}, ensure_ascii=False), "utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_path),
        unk_token=UNK,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        word_delimiter_token=WORD_DELIMITER,
        do_lower_case=False,
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=False,  # our pipeline feeds waveforms as they are
        return_attention_mask=cfg.encoder.frontend.mode == "layer_norm",  # group norm spans padding (as HF's base)
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return tuple(sorted({key.split(".")[0] for key in unmapped}))


# ---- import ---------------------------------------------------------------------------------------------------


def read_vocab_json(folder: Path, size: int) -> tuple[str, ...]:
    """vocab.json ({token: id}, ids 0..size-1) as tokens in id order; id 0 must be the blank "<pad>"."""
    path = folder / VOCAB_FILE
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise ValueError(f"{path}: missing; a *ForCTC folder needs its vocabulary to transcribe") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"{path}: a vocabulary per language (multi-lingual tokenizer); not supported")
    if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
        raise ValueError(f"{path}: expected {{token: id}} with ids 0..n-1, each once")
    tokens = tuple(sorted(table, key=table.__getitem__))
    if len(tokens) != size:
        raise ValueError(f"{path}: {len(tokens)} tokens, but lm_head has {size} outputs")
    if tokens[BLANK] != PAD:
        raise ValueError(f"{path}: id 0 is {tokens[BLANK]!r}; the CTC blank must be {PAD!r} at id 0")
    return tokens


def finetune_config_from_hf(hf: Any, vocab: tuple[str, ...], *, source: str) -> FineTuneConfig:
    """Our fine-tuning config for a transformers *ForCTC config: ours when we wrote it, else built from its fields."""
    ours = getattr(hf, "ssl_audio", None)
    if isinstance(ours, dict) and ours.get("family") == "finetune":
        cfg = resolve_config(ModelConfig(family="finetune", preset="base", config=ours.get("config", {})))
        if cfg.vocab == vocab:
            return cfg
    _, trunk = config_from_hf(hf, source=source)
    base = finetune_base()
    return replace(
        base,
        encoder=trunk.encoder,
        masking=MaskingConfig(
            mask_prob=float(hf.mask_time_prob),
            mask_length=int(hf.mask_time_length),
            channel_prob=float(hf.mask_feature_prob),
            channel_length=int(hf.mask_feature_length),
        ),
        head="ctc",
        vocab=vocab,
        head_dropout=float(getattr(hf, "final_dropout", 0.0)),
    )


def read_hf_ctc(folder: str | Path) -> Imported:
    """A transformers *ForCTC folder as our `finetune` model (head ctc) with its vocabulary."""
    folder = Path(folder)
    hf = hf_config(folder)
    source = str(folder / "config.json")
    if getattr(hf, "pad_token_id", BLANK) != BLANK:
        raise ValueError(f"{source}: pad_token_id (the CTC blank) is {hf.pad_token_id}; ssl_audio needs blank id 0")
    theirs = rename_weight_norm(read_weights(folder), legacy=False)
    if "lm_head.weight" not in theirs:
        raise ValueError(f"{folder}: a *ForCTC config but no lm_head.weight in the weights")
    vocab = read_vocab_json(folder, int(theirs["lm_head.weight"].shape[0]))
    cfg = finetune_config_from_hf(hf, vocab, source=source)
    state, dropped, notes = gather("finetune", cfg, theirs, _table(f"{hf.model_type}."), source=str(folder))
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file() and json.loads(preprocessor.read_text(encoding="utf-8")).get("do_normalize"):
        notes += (
            "the model expects zero-mean, unit-variance waveforms (preprocessor do_normalize); `ssl-audio "
            "transcribe` feeds waveforms as they are: normalise the audio files first",
        )
    return Imported(family="finetune", config=cfg, state=state, source=str(folder), dropped=dropped, notes=notes)
