"""Every count, rate and probability of a run's config is range-checked when the config is built.

Oracle: the allowed range of each key, written out here by hand (from what the code does with the value:
a divisor, a log, a probability, a count of updates), and the exact one-line message naming the dotted key.
"""

from __future__ import annotations

import re

import pytest

from ssl_audio.checks import FieldError
from ssl_audio.cluster.iterate import IterateConfig, IterationConfig
from ssl_audio.data.mixing import MixingConfig
from ssl_audio.models.encoder import EncoderConfig
from ssl_audio.models.registry import ModelConfig, family_config
from ssl_audio.nn.masking import MaskingConfig
from ssl_audio.nn.quantizer import QuantizerConfig
from ssl_audio.train.config import Config, TrainConfig, from_dict, load_config
from ssl_audio.train.schedule import ScheduleConfig

COUNT = "must be an integer >= 1, got {}"
COUNT0 = "must be an integer >= 0, got {}"
PROBABILITY = "must be in [0, 1], got {}"
POSITIVE = "must be finite and > 0, got {}"
NON_NEGATIVE = "must be finite and >= 0, got {}"

# (override, the value as the message shows it, the rule)
REFUSED = [
    ("data.max_samples=0", "0", COUNT),
    ("data.num_buckets=-1", "-1", COUNT0),
    ("data.num_workers=-2", "-2", COUNT0),
    ("data.max_batch_seconds=0", "0.0", POSITIVE),
    ("data.max_batch_seconds=.inf", "inf", POSITIVE),
    ("data.target_lufs=3", "3.0", "must be in [-70, 0], got {}"),
    ("data.target_lufs=.nan", "nan", "must be in [-70, 0], got {}"),
    ("data.mixing.prob=1.5", "1.5", PROBABILITY),
    ("data.mixing.noise_prob=-0.1", "-0.1", PROBABILITY),
    ("data.mixing.max_overlap=0", "0.0", "must be in (0, 1], got {}"),
    ("data.mixing.noise_max_seconds=-1", "-1.0", POSITIVE),
    ("data.conditions.reverb_prob=1.5", "1.5", PROBABILITY),
    ("data.conditions.channel_prob=-0.5", "-0.5", PROBABILITY),
    ("data.conditions.max_rir_seconds=0", "0.0", POSITIVE),
    ("optim.lr=0", "0.0", POSITIVE),
    ("optim.lr=-1e-3", "-0.001", POSITIVE),
    ("optim.lr=.nan", "nan", POSITIVE),
    ("optim.lr=.inf", "inf", POSITIVE),
    ("optim.eps=0", "0.0", POSITIVE),
    ("optim.weight_decay=-0.01", "-0.01", NON_NEGATIVE),
    ("optim.clip_norm=-1", "-1.0", NON_NEGATIVE),
    ("schedule.warmup_updates=-1", "-1", COUNT0),
    ("schedule.power=0", "0.0", POSITIVE),
    ("schedule.end_lr_ratio=1.5", "1.5", PROBABILITY),
    ("schedule.init_lr_scale=-0.5", "-0.5", PROBABILITY),
    ("schedule.final_lr_scale=0", "0.0", "must be in (0, 1], got {}"),  # the decay takes its log
    ("train.max_updates=-5", "-5", COUNT0),  # 0 is allowed: it saves the starting point (tests/train/test_init.py)
    ("train.max_epochs=0", "0", COUNT),
    ("train.stop_at=0", "0", COUNT),
    ("train.target_seconds_per_update=0", "0.0", POSITIVE),
    ("train.grad_accum=0", "0", COUNT),
    ("train.valid_every=0", "0", COUNT),
    ("train.valid_max_batches=0", "0", COUNT),
    ("train.save_every=0", "0", COUNT),
    ("train.keep_last=0", "0", COUNT),
    ("train.log_every=0", "0", COUNT),
    ("train.max_bad_updates=0", "0", COUNT),
    ("train.chance_warn_after=-1", "-1", COUNT0),
    ("train.perplexity_warn_below=2", "2.0", PROBABILITY),
]


@pytest.mark.parametrize(("override", "shown", "rule"), REFUSED, ids=[o for o, _, _ in REFUSED])
def test_out_of_range_values_name_the_key_and_the_range(override: str, shown: str, rule: str):
    key = override.partition("=")[0]
    expected = f"defaults: config key {key!r}: {rule.format(shown)}"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.betas=[0.9, 1.0]", "config key 'optim.betas[1]': must be in [0, 1), got 1.0"),
        ("optim.betas=[-0.1, 0.98]", "config key 'optim.betas[0]': must be in [0, 1), got -0.1"),
        ("schedule.phase_ratios=[0.5, 0.5, 1.5]", "config key 'schedule.phase_ratios[2]': must be in [0, 1], got 1.5"),
        (
            "schedule.phase_ratios=[0.1, 0.4, 0.4]",
            "config key 'schedule.phase_ratios': must sum to 1 (warmup, hold, decay), got [0.1, 0.4, 0.4]",
        ),
        (
            "data.mixing.noise_snr_db=[0, .inf]",
            "config key 'data.mixing.noise_snr_db[1]': must be a finite number, got inf",
        ),
        (
            "data.mixing.speech_ratio_db=[5, -5]",
            "config key 'data.mixing.speech_ratio_db': must be (low, high) with low <= high, got (5.0, -5.0)",
        ),
        (
            "data.conditions.lowpass_hz=[3400, 8000]",
            "config key 'data.conditions.lowpass_hz': must stay below Nyquist (8000 Hz), got (3400.0, 8000.0)",
        ),
    ],
)
def test_tuples_are_checked_item_by_item(override: str, message: str):
    with pytest.raises(ValueError, match=f"^defaults: {re.escape(message)}$"):
        load_config(None, [override])


def test_the_edges_of_every_range_are_allowed():
    """The checks refuse exactly what is outside: each bound itself still loads."""
    edges = [
        "data.max_samples=1", "data.num_buckets=0", "data.num_workers=0", "data.target_lufs=0",
        "data.target_lufs=-70", "data.mixing.prob=1", "data.mixing.noise_prob=0", "data.mixing.max_overlap=1",
        "data.conditions.reverb_prob=1", "data.conditions.channel_prob=0", "data.conditions.lowpass_hz=[3400, 7999]",
        "optim.betas=[0, 0.999999]", "optim.weight_decay=0", "optim.clip_norm=0", "optim.lr=1e-12",
        "schedule.warmup_updates=0", "schedule.end_lr_ratio=1", "schedule.init_lr_scale=0",
        "schedule.final_lr_scale=1", "schedule.phase_ratios=[0, 0, 1]", "schedule.phase_ratios=[0.05, 0.45, 0.5]",
        "train.max_updates=0", "train.grad_accum=1", "train.save_every=1", "train.valid_every=1",
        "train.log_every=1", "train.keep_last=1", "train.chance_warn_after=0", "train.perplexity_warn_below=0",
        "train.max_epochs=null", "train.stop_at=null", "train.valid_max_batches=null", "data.target_lufs=null",
    ]  # fmt: skip
    cfg = load_config(None, edges)
    assert (cfg.train.max_updates, cfg.optim.betas, cfg.schedule.phase_ratios) == (
        0,
        (0.0, 0.999999),
        (0.05, 0.45, 0.5),
    )
    lowest = load_config(None, ["train.max_epochs=1", "train.stop_at=1", "train.valid_max_batches=1"]).train
    assert (lowest.max_epochs, lowest.stop_at, lowest.valid_max_batches) == (1, 1, 1)
    assert Config() == load_config(None)  # the defaults pass their own checks


DIVIDE_96 = "must divide dim 96, got {}"  # the tiny presets are 96 wide
NO_LAYERS = "must hold at least one (channels, kernel, stride) layer, got none"
NO_LABEL_SETS = "must list the clusters of at least one label set, got none"

# (family, key under model.config, value, the value as the message shows it, the rule)
FAMILY_REFUSED = [
    ("wav2vec2", "masking.mask_prob", 1.5, "1.5", PROBABILITY),
    ("hubert", "masking.mask_length", 0, "0", COUNT),
    ("wavlm", "masking.min_masks", -1, "-1", COUNT0),
    ("wav2vec2", "masking.min_space", -2, "-2", COUNT0),
    ("wav2vec2", "masking.channel_prob", -0.5, "-0.5", PROBABILITY),
    ("wav2vec2", "masking.channel_length", 0, "0", COUNT),
    ("hubert", "encoder.dropout", 1.1, "1.1", PROBABILITY),
    ("hubert", "encoder.layerdrop", -0.1, "-0.1", PROBABILITY),
    ("wav2vec2", "encoder.attention_dropout", 2, "2.0", PROBABILITY),
    ("wav2vec2", "encoder.activation_dropout", -1, "-1.0", PROBABILITY),
    ("wavlm", "encoder.projection_dropout", 3, "3.0", PROBABILITY),
    ("wav2vec2", "encoder.num_layers", 0, "0", COUNT),
    ("wav2vec2", "encoder.dim", -8, "-8", COUNT),
    ("wav2vec2", "encoder.ffn_dim", 0, "0", COUNT),
    ("wavlm", "encoder.num_buckets", 0, "0", COUNT),
    ("wavlm", "encoder.max_distance", 0, "0", COUNT),
    ("wav2vec2", "encoder.pos_conv_kernel", 0, "0", COUNT),
    ("wav2vec2", "encoder.num_heads", 5, "5", DIVIDE_96),
    ("wav2vec2", "encoder.pos_conv_groups", 7, "7", DIVIDE_96),
    ("wav2vec2", "encoder.frontend.layers", [], "", NO_LAYERS),
    ("wav2vec2", "quantizer.num_groups", 0, "0", COUNT),
    ("wav2vec2", "quantizer.num_entries", 0, "0", COUNT),
    ("wav2vec2", "quantizer.code_dim", 63, "", "code_dim 63 must be a positive multiple of num_groups 2"),
    ("wav2vec2", "quantizer.temp_start", -2, "-2.0", POSITIVE),
    ("wav2vec2", "quantizer.temp_end", 0, "0.0", POSITIVE),
    ("wav2vec2", "quantizer.temp_decay", 1.5, "", "must be in (0, 1], got 1.5"),
    ("wav2vec2", "num_negatives", 0, "0", COUNT),
    ("wav2vec2", "final_dim", 0, "0", COUNT),
    ("wav2vec2", "logit_temp", 0, "0.0", POSITIVE),
    ("wav2vec2", "feature_dropout", 1.5, "1.5", PROBABILITY),
    ("wav2vec2", "feature_grad_mult", -0.1, "-0.1", NON_NEGATIVE),
    ("wav2vec2", "diversity_weight", -1, "-1.0", NON_NEGATIVE),
    ("wav2vec2", "feature_penalty_weight", float("inf"), "inf", NON_NEGATIVE),
    ("hubert", "num_classes", [], "", NO_LABEL_SETS),
    ("wavlm", "label_rate", 0, "0.0", POSITIVE),
    ("hubert", "final_dim", 0, "0", COUNT),
    ("hubert", "logit_temp", -0.1, "-0.1", POSITIVE),
    ("hubert", "masked_weight", -1, "-1.0", NON_NEGATIVE),
    ("hubert", "unmasked_weight", -1, "-1.0", NON_NEGATIVE),
    ("hubert", "feature_grad_mult", float("nan"), "nan", NON_NEGATIVE),
    ("wavlm", "feature_penalty_weight", -10, "-10.0", NON_NEGATIVE),
]


def nested(dotted: str, value: object) -> dict:
    *parents, leaf = dotted.split(".")
    tree: dict = {leaf: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


@pytest.mark.parametrize(
    ("family", "key", "value", "shown", "rule"), FAMILY_REFUSED, ids=[f"{f}-{k}" for f, k, *_ in FAMILY_REFUSED]
)
def test_family_configs_name_the_model_config_key(family: str, key: str, value: object, shown: str, rule: str):
    expected = f"config key 'model.config.{key}': {rule.format(shown)}"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        family_config(ModelConfig(family=family, preset="tiny", config=nested(key, value)))


@pytest.mark.parametrize(
    ("family", "changes", "key"),
    [
        ("wav2vec2", {"encoder": {"frontend": {"layers": [[64, 10, 5], [64, 3, 0]]}}}, "encoder.frontend.layers[1][2]"),
        ("hubert", {"num_classes": [100, 0]}, "num_classes[1]"),
    ],
)
def test_family_tuples_name_the_item(family: str, changes: dict, key: str):
    expected = f"config key 'model.config.{key}': must be an integer >= 1, got 0"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        family_config(ModelConfig(family=family, preset="tiny", config=changes))


def test_every_family_preset_passes_its_checks():
    for family, presets in {"wav2vec2": ("tiny", "base", "large"), "hubert": ("tiny", "base", "large")}.items():
        for preset in presets:
            family_config(ModelConfig(family=family, preset=preset))
    for preset in ("tiny", "base", "base_plus", "large"):
        family_config(ModelConfig(family="wavlm", preset=preset))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(save_every=0), "TrainConfig.save_every: must be an integer >= 1, got 0"),
        (lambda: TrainConfig(grad_accum=True), "TrainConfig.grad_accum: must be an integer >= 1, got True"),
        (lambda: TrainConfig(log_every=2.5), "TrainConfig.log_every: must be an integer >= 1, got 2.5"),
        (lambda: MaskingConfig(mask_prob=float("nan")), "MaskingConfig.mask_prob: must be in [0, 1], got nan"),
        (lambda: QuantizerConfig(temp_start=-1.0), "QuantizerConfig.temp_start: must be finite and > 0, got -1.0"),
        (lambda: EncoderConfig(ffn_dim=0), "EncoderConfig.ffn_dim: must be an integer >= 1, got 0"),
        (lambda: ScheduleConfig(power=float("inf")), "ScheduleConfig.power: must be finite and > 0, got inf"),
        (lambda: MixingConfig(prob=1.5), "MixingConfig.prob: must be in [0, 1], got 1.5"),
        (lambda: IterationConfig(k=0), "IterationConfig.k: must be an integer >= 1, got 0"),
    ],
)
def test_direct_construction_names_the_class_and_field(build, message: str):
    with pytest.raises(FieldError, match=f"^{re.escape(message)}$") as caught:
        build()
    assert isinstance(caught.value, ValueError)  # the CLI turns ValueError into exit code 2


@pytest.mark.parametrize(
    ("iterations", "message"),
    [
        ([{"k": 100}, {"k": 0}], "config key 'iterations[1].k': must be an integer >= 1, got 0"),
        ([{"max_points": -3}], "config key 'iterations[0].max_points': must be an integer >= 1, got -3"),
        ([{"kmeans_iterations": 0}], "config key 'iterations[0].kmeans_iterations': must be an integer >= 1, got 0"),
        ([{"source": "previous", "layer": -1}], "config key 'iterations[0].layer': must be an integer >= 0, got -1"),
        ([], "config key 'iterations': must hold at least one round, got none"),
    ],
)
def test_hubert_iterate_rounds_are_checked(iterations: list, message: str):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        from_dict({"iterations": iterations}, schema=IterateConfig)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pretrain": {"train": {"save_every": 0}}}, "config key 'pretrain.train.save_every': " + COUNT.format(0)),
        (
            {"pretrain": {"model": {"family": "hubert", "config": {"masking": {"mask_prob": 2}}}}},
            "config key 'pretrain.model.config.masking.mask_prob': must be in [0, 1], got 2.0",
        ),
        (
            {"iterations": [{"k": 5}, {"k": 6, "overrides": ["train.max_updates=-5"]}]},
            "config key 'iterations[1].overrides': config key 'train.max_updates': " + COUNT0.format(-5),
        ),
    ],
)
def test_hubert_iterate_checks_its_pretraining_before_the_first_round(values: dict, message: str):
    """Otherwise the error would come only after a round's features and k-means (and without 'pretrain.')."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        from_dict(values, schema=IterateConfig)


def test_bad_file_fraction_is_checked_at_load() -> None:
    with pytest.raises(ValueError, match=r"config key 'data\.max_bad_fraction': must be in \[0, 1\), got 1"):
        load_config(None, ["data.max_bad_fraction=1"])
    assert load_config(None, ["data.max_bad_fraction=0"]).data.max_bad_fraction == 0.0
