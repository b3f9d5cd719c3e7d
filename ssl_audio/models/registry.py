"""The families: one record per objective (config class, presets, builder and the quirks the loop must not know).

A new family is its module plus one entry in FAMILIES.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from torch import Tensor, nn

from ssl_audio.configs import from_dict, to_dict
from ssl_audio.models import bestrq, finetune, hubert, wav2vec2, wavlm, whisper
from ssl_audio.models.migrate import migrate_model_config


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which family, which preset, and overrides of the preset's fields (checked against the family's config)."""

    family: Literal["wav2vec2", "hubert", "wavlm", "bestrq", "finetune", "whisper"] = "wav2vec2"
    preset: str = "base"  # a preset function of the family: base, large, tiny (wavlm: base_plus; whisper: small ...)
    config: dict[str, Any] = field(default_factory=dict)  # e.g. {masking: {mask_prob: 0.5}, num_classes: [100]}


@dataclass(frozen=True, kw_only=True)
class LabelShapes:
    """What the label files' headers say (checked to agree across sets and splits by whoever reads them)."""

    num_classes: tuple[int, ...]  # k of each label set
    rate: float  # Hz, one rate for every set
    vocab: tuple[str, ...] = ()  # fine-tuning: the tokens or class names of the utterance targets
    # the label frames' window and offset in samples (nn/frontend.py's framing), None where the headers do not say
    window: int | None = None
    offset: int | None = None


class BatchLike(Protocol):
    """What a family reads from a batch (data/collate.py's Batch)."""

    waves: Tensor  # (B, S)
    lengths: Tensor  # (B,)
    labels: tuple[Tensor, ...]  # one (B, L) tensor per label set; () without labels


@dataclass(frozen=True, kw_only=True)
class Family:
    """One objective: everything the loop, loading and conversion need to know about it, so they name no family."""

    config_class: type
    presets: dict[str, Callable[[], Any]]
    model_class: Callable[[Any], nn.Module]  # family config -> model (the builder)
    inputs: Callable[[BatchLike], dict[str, Any]]  # what a batch feeds forward() (besides the step context)
    # The model section resolved from the data: e.g. classes and rate from the label headers, read when called.
    resolve: Callable[[ModelConfig, Callable[[], LabelShapes | None]], ModelConfig]
    chance: Callable[[Any], float]  # headline accuracy of guessing, from the family config
    perplexity_floor: Callable[[Any, float], float | None]  # (config, fraction of the codebook) -> collapse warning
    fresh_parts: dict[str, tuple[str, ...]]  # init option (InitConfig field) -> state-dict prefixes it starts fresh
    accuracy_key: str  # the metric reported as "accuracy" (masked-frame accuracy)
    # Validation: task metrics from the mean counts, and the one that picks the best checkpoint (higher better?).
    summarise: Callable[[Any, dict[str, float]], dict[str, float]] = lambda cfg, means: means
    best_metric: Callable[[Any], tuple[str, bool]] = lambda cfg: ("loss", False)
    # (config, update, this update's metrics, train.chance_warn_after) -> a warning when training is stuck
    stuck: Callable[[Any, int, dict[str, float], int], str | None] = lambda cfg, step, metrics, after: None
    # Parameters that may get no gradient in an update (DDP's find_unused_parameters): layerdrop, frozen parts.
    unused_parameters: Callable[[Any], bool] = lambda cfg: cfg.encoder.layerdrop > 0
    init_keeps: tuple[str, ...] = ()  # only these state-dict prefixes come from init.checkpoint (empty: all)
    encoder_from_init: bool = False  # the encoder architecture is init.checkpoint's (train/config.py)


def _unlabelled_inputs(batch: BatchLike) -> dict[str, Any]:
    return {"wave": batch.waves, "lengths": batch.lengths}


def _labelled_inputs(name: str) -> Callable[[BatchLike], dict[str, Any]]:
    def inputs(batch: BatchLike) -> dict[str, Any]:
        if not batch.labels:
            raise ValueError(f"{name} needs frame labels: set data.train_labels / data.valid_labels")
        return {"wave": batch.waves, "lengths": batch.lengths, "labels": list(batch.labels)}

    return inputs


def _unchanged(model: ModelConfig, labels: Callable[[], LabelShapes | None]) -> ModelConfig:
    return model


def _with_label_shapes(model: ModelConfig, labels: Callable[[], LabelShapes | None]) -> ModelConfig:
    """HuBERT/WavLM: the number of classes, the label rate and (where the headers say them) the label frames'
    window and offset come from the label files' headers; a recipe's own label_window / label_offset must agree."""
    shapes = labels()
    if shapes is None:
        raise ValueError(f"model.family={model.family} needs data.train_labels (see `ssl-audio kmeans assign`)")
    found: dict[str, Any] = {"num_classes": list(shapes.num_classes), "label_rate": shapes.rate}
    for key, value in (("label_window", shapes.window), ("label_offset", shapes.offset)):
        if value is None:
            continue  # older headers, .km files: the recipe's setting or the default, as before
        if key in model.config and model.config[key] is not None and model.config[key] != value:
            raise ValueError(
                f"model.config.{key}={model.config[key]}, but the label headers say {key.removeprefix('label_')} "
                f"{value} (samples): drop the setting, the labels carry it"
            )
        found[key] = value
    return replace(model, config={**model.config, **found})


def _wav2vec2_chance(cfg: wav2vec2.Wav2Vec2Config) -> float:
    return 1.0 / (1 + cfg.num_negatives)  # the target among K distractors


def _hubert_chance(cfg: hubert.HubertConfig) -> float:
    return 1.0 / max(cfg.num_classes)  # one of k clusters, the largest label set


def _bestrq_chance(cfg: bestrq.BestRqConfig) -> float:
    return 1.0 / cfg.codebook_size  # one of V codewords


def _codebook_floor(cfg: wav2vec2.Wav2Vec2Config, fraction: float) -> float:
    return fraction * cfg.quantizer.num_groups * cfg.quantizer.num_entries


def _no_codebook(cfg: Any, fraction: float) -> None:
    return None


QUANTIZER_PARTS = ("quantizer.", "project_targets.")  # wav2vec2's codebook and its projection
HEAD_PARTS = ("final_proj.", "label_embeddings")  # HuBERT / WavLM's label heads


def _hubert_like(name: str, presets: dict[str, Callable[[], Any]]) -> Family:
    return Family(
        config_class=hubert.HubertConfig,
        presets=presets,
        model_class=hubert.Hubert,
        inputs=_labelled_inputs(name),
        resolve=_with_label_shapes,
        chance=_hubert_chance,
        perplexity_floor=_no_codebook,
        fresh_parts={"reset_heads": HEAD_PARTS},
        accuracy_key="accuracy_masked_0",
    )


def _with_vocab(model: ModelConfig, labels: Callable[[], LabelShapes | None]) -> ModelConfig:
    """Fine-tuning: the vocabulary (tokens or class names) comes from the targets (ssl_audio/finetune/targets.py)."""
    shapes = labels()
    if shapes is None or not shapes.vocab:
        if "vocab" in model.config:
            return model
        raise ValueError("model.family=finetune needs targets: set finetune.train (a tsv of transcripts or labels)")
    given = model.config.get("vocab")
    if given is not None and tuple(given) != shapes.vocab:
        raise ValueError(
            f"config key 'model.config.vocab': {len(given)} entries differ from the {len(shapes.vocab)} the targets "
            "give (finetune.vocab / finetune.train); drop one of them"
        )
    return replace(model, config={**model.config, "vocab": list(shapes.vocab)})


FAMILIES: dict[str, Family] = {
    "wav2vec2": Family(
        config_class=wav2vec2.Wav2Vec2Config,
        presets={"base": wav2vec2.wav2vec2_base, "large": wav2vec2.wav2vec2_large, "tiny": wav2vec2.wav2vec2_tiny},
        model_class=wav2vec2.Wav2Vec2,
        inputs=_unlabelled_inputs,
        resolve=_unchanged,
        chance=_wav2vec2_chance,
        perplexity_floor=_codebook_floor,
        fresh_parts={"reset_quantizer": QUANTIZER_PARTS},
        accuracy_key="accuracy",
    ),
    "hubert": _hubert_like(
        "hubert", {"base": hubert.hubert_base, "large": hubert.hubert_large, "tiny": hubert.hubert_tiny}
    ),
    "wavlm": _hubert_like(
        "wavlm",
        {
            "base": wavlm.wavlm_base,
            "base_plus": wavlm.wavlm_base_plus,
            "large": wavlm.wavlm_large,
            "tiny": wavlm.wavlm_tiny,
        },
    ),
    "whisper": _hubert_like("whisper", whisper.PRESETS),  # HuBERT's objective on Whisper's encoder
    "bestrq": Family(
        config_class=bestrq.BestRqConfig,
        presets={"base": bestrq.bestrq_base, "tiny": bestrq.bestrq_tiny},
        model_class=bestrq.BestRq,
        inputs=_unlabelled_inputs,  # its targets come from the audio itself
        resolve=_unchanged,
        chance=_bestrq_chance,
        perplexity_floor=_no_codebook,  # nothing learned can collapse: the quantiser is frozen
        fresh_parts={"reset_heads": ("heads.",)},  # the quantiser's buffers are kept: same targets
        accuracy_key="accuracy_masked_0",
    ),
    "finetune": Family(
        config_class=finetune.FineTuneConfig,
        presets={"base": finetune.finetune_base, "tiny": finetune.finetune_tiny},
        model_class=finetune.FineTune,
        inputs=_labelled_inputs("finetune"),
        resolve=_with_vocab,
        chance=lambda cfg: 0.0 if cfg.head in finetune.TRANSCRIBING else 1.0 / len(cfg.vocab),
        perplexity_floor=_no_codebook,
        fresh_parts={},
        accuracy_key="accuracy",
        summarise=finetune.summarise,
        best_metric=finetune.best_metric,
        stuck=finetune.stuck_warning,
        unused_parameters=lambda cfg: True,  # frozen parts and frozen updates leave parameters without gradients
        init_keeps=("encoder.", "masker."),  # a pretrained trunk (and its mask embedding), never its heads
        encoder_from_init=True,
    ),
}


def lay_over(base: dict, changes: dict) -> dict:
    """`changes` laid over `base`, nested mappings merged key by key; a tagged section of another `kind` (a
    log-mel front-end over a preset's conv stack) replaces the base's whole, as none of its keys apply."""
    if "kind" in changes and changes["kind"] != base.get("kind", changes["kind"]):
        return dict(changes)
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            lay_over(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def is_complete(values: dict, schema: type) -> bool:
    """Whether `values` gives every field of `schema` (recursively): such a config depends on no preset."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        if f.name not in values:
            return False
        nested = dataclasses.is_dataclass(hints[f.name]) and isinstance(values[f.name], dict)
        if nested and not is_complete(values[f.name], hints[f.name]):
            return False
    return True


def family_config(model: ModelConfig) -> Any:
    """The family's config: the preset's values with `model.config` laid over them (keys checked).

    A complete `model.config` (every field, as step folders record it) is the config itself: no preset is read."""
    family = FAMILIES[model.family]
    model = replace(model, config=migrate_model_config(model.config))
    if is_complete(model.config, family.config_class):
        base: dict = {}
    elif model.preset not in family.presets:
        raise ValueError(f"config key 'model.preset': {model.family} has presets {sorted(family.presets)}")
    else:
        base = to_dict(family.presets[model.preset]())
    try:
        return from_dict(lay_over(base, model.config), schema=family.config_class)
    except ValueError as err:
        raise ValueError(str(err).replace("config key '", "config key 'model.config.")) from None


def resolved_model(model: ModelConfig) -> ModelConfig:
    """The model section with every field of the family config spelled out: what a step folder records, so that
    it builds the same model whatever later happens to the presets."""
    return replace(model, config=to_dict(family_config(model)))


def build_model(model: ModelConfig) -> nn.Module:
    return FAMILIES[model.family].model_class(family_config(model))
