"""The run config: its folder, seed and sections, each schema beside what it configures.

`load_config` / `from_dict` here are ssl_audio.configs' loader with the run `Config` as the default schema.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from ssl_audio import configs
from ssl_audio.checks import require_count, require_non_negative, require_positive, require_probability, require_range
from ssl_audio.data.config import DataConfig
from ssl_audio.data.labels import check_label_sets, label_classes, label_framing, label_info
from ssl_audio.finetune.init import encoder_from_checkpoint
from ssl_audio.finetune.targets import TargetsConfig, target_vocab
from ssl_audio.models.registry import FAMILIES, LabelShapes, ModelConfig
from ssl_audio.train.schedule import ScheduleConfig
from ssl_audio.train.trackers import TRACKERS

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW. Defaults: wav2vec 2.0 / HuBERT BASE (fairseq adam betas (0.9, 0.98), eps 1e-6, wd 0.01)."""

    lr: float = 5e-4  # peak learning rate; wav2vec 2.0 / HuBERT BASE 5e-4, LARGE 3e-4 (LibriVox: 5e-3 x 0.1)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01  # not applied to norms, biases and other vectors
    clip_norm: float = 10.0  # HuBERT BASE 10; 0 disables clipping (the norm is still measured)
    # Layer-wise decay: layer l of L trains at lr * layer_decay^(L - l); front-end, projection and positional
    # embedding are layer 0; heads are not decayed. 1.0: one rate for all (fairseq's fine-tuning recipes).
    layer_decay: float = 1.0
    head_lr: float | None = None  # the heads' own peak rate (None: lr); the schedule scales it like lr

    def __post_init__(self) -> None:
        require_positive(self, "lr", "eps", "head_lr")
        require_range(self, "layer_decay", low=0, high=1, low_open=True)
        require_range(self, "betas", low=0, high=1, high_open=True)
        require_non_negative(self, "weight_decay", "clip_norm")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How long, how precise, how often to validate, checkpoint and log."""

    max_updates: int = 400_000  # wav2vec 2.0 / HuBERT BASE; 0 saves the starting point (init.checkpoint's weights)
    max_epochs: int | None = None  # stop after this many epochs too, whichever comes first
    stop_at: int | None = None  # end this call at this update (checkpointed); the schedule still spans the run
    target_seconds_per_update: float | None = None  # audio per update over all processes: sets accumulation
    grad_accum: int = 1  # micro-batches per update when target_seconds_per_update is None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 (GPU only) uses dynamic loss scaling
    compile: bool = False  # torch.compile the model
    cpu: bool = False  # force the CPU even when a GPU is present
    valid_every: int = 1000  # updates between validations (and at the end)
    valid_max_batches: int | None = None  # cap validation cost; None = the whole valid manifest
    save_every: int = 5000  # updates between checkpoints (and at the end)
    keep_last: int = 2  # newest checkpoints kept, plus the best by validation loss
    log_every: int = 100  # updates between text log lines and TensorBoard points
    max_bad_updates: int = 20  # consecutive skipped (non-finite) updates before the run stops
    perplexity_warn_below: float = 0.02  # warn when code perplexity < this fraction of G*V (collapse)
    chance_warn_after: int = 2000  # warn when masked accuracy is still near chance after this many updates
    peak_tflops: float | None = None  # MFU's denominator; None: the GPU's data sheet, or a matmul measured on a CPU
    log_with: tuple[str, ...] = ("tensorboard",)  # trackers (accelerate's): tensorboard, wandb, mlflow; [] for none

    def __post_init__(self) -> None:
        require_count(self, "max_epochs", "stop_at", "grad_accum", "valid_every", "valid_max_batches", "save_every")
        require_count(self, "keep_last", "log_every", "max_bad_updates")
        require_count(self, "max_updates", "chance_warn_after", minimum=0)
        require_positive(self, "target_seconds_per_update", "peak_tflops")
        require_probability(self, "perplexity_warn_below")
        unknown = [name for name in self.log_with if name not in TRACKERS]
        if unknown:
            raise ValueError(f"train.log_with: {unknown[0]!r} is not one of {list(TRACKERS)}")


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    """Continued pretraining: start from another run's weights with a fresh optimizer, schedule and step."""

    checkpoint: str | None = None  # a step folder of ours, or a converted model (ssl-audio convert)
    reset_quantizer: bool = False  # wav2vec2: new codebook instead of the checkpoint's
    reset_heads: bool = False  # HuBERT/WavLM: new projection and label embeddings (needed when k changes)
    rewarm: bool = True  # warm the learning rate up again; False starts at the peak


@dataclass(frozen=True, kw_only=True)
class Config:
    """A run: its folder, its seed and its parts."""

    run_dir: str = "checkpoints/default"  # resolved config, logs, TensorBoard and step folders go here
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: InitConfig = field(default_factory=InitConfig)
    finetune: TargetsConfig = field(default_factory=TargetsConfig)  # utterance targets (model.family=finetune)


def from_dict(values: dict, overrides: list[str] | tuple[str, ...] = (), schema: type[T] = Config) -> T:  # type: ignore[assignment]
    """`configs.from_dict` with the run config as the default schema."""
    return configs.from_dict(values, overrides, schema=schema)


def load_config(
    yaml_path: str | os.PathLike | None,
    overrides: list[str] | tuple[str, ...] = (),
    schema: type[T] = Config,  # type: ignore[assignment]
) -> T:
    """`configs.load_config` with the run config as the default schema (the defaults when `yaml_path` is None)."""
    return configs.load_config(yaml_path, overrides, schema=schema)


def read_label_shapes(data: DataConfig, targets: TargetsConfig | None = None) -> LabelShapes | None:
    """Classes, rate and (where they say it) the frames' window and offset from the label files' headers (None
    without data.train_labels).

    Every header, train and valid, is checked before any training: a mismatch would surface only at the first
    validation, or not at all (labels of another k-means model give a plausible but wrong valid loss)."""
    if targets is not None and targets.train is not None:  # fine-tuning: the vocabulary of the utterance targets
        vocab = target_vocab(targets)
        return LabelShapes(num_classes=(len(vocab),), rate=0.0, vocab=vocab)
    if not data.train_labels:
        return None
    check_label_sets(data.train_labels, data.valid_labels, data.label_rate)
    rate = float(label_info(data.train_labels[0], data.label_rate)["rate"])  # one rate for all sets, checked above
    framings = [label_framing(path, data.label_rate) for path in data.train_labels]  # those that say agree (above)
    window = next((w for w, _ in framings if w is not None), None)
    offset = next((o for _, o in framings if o is not None), None)
    return LabelShapes(
        num_classes=label_classes(data.train_labels, data.label_rate), rate=rate, window=window, offset=offset
    )


def resolve_config(cfg: Config) -> Config:
    """The model section as the family resolves it from the data (HuBERT/WavLM: label classes and rate;
    fine-tuning: the vocabulary, and the trunk of init.checkpoint)."""
    family = FAMILIES[cfg.model.family]
    model = family.resolve(cfg.model, lambda: read_label_shapes(cfg.data, cfg.finetune))
    if family.encoder_from_init and cfg.init.checkpoint:
        model = replace(model, config={**model.config, "encoder": encoder_from_checkpoint(model, cfg.init.checkpoint)})
    return replace(cfg, model=model)
