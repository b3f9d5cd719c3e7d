"""What a resumed run may change: keys the loop honours from the new config; every other change is refused.

On resume the new resolved config is compared key by key with the checkpoint's config.yaml: the config its
weights, optimizer and sampler state were trained with (the run folder's config.yaml is the same file, except
after a resume that died before its first save). Honoured keys are read from the new config by the loop (the
optimizer's hyperparameters and the peak rate are put back into the restored optimizer and scheduler by
`apply_optimizer_settings`), so config.yaml records only values the run uses. Any other change (model, seed,
crops and batches, precision, accumulation, init...) would be overridden by the restored state or would make it
meaningless: refused, naming the key and both values."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import torch
import yaml

from ssl_audio.configs import parse_yaml, to_dict
from ssl_audio.models.loading import model_section
from ssl_audio.models.registry import resolved_model
from ssl_audio.train.config import Config, from_dict

# Exact keys, or prefixes ending in "." for a whole section.
HONOURED = (
    "run_dir",  # a copied run folder resumes in its new place
    "optim.",  # lr, betas, eps, weight decay: put back into the restored optimizer; clip_norm: read each update
    "schedule.",  # the multiplier is a function of the new config, recomputed for the restored step
    "train.max_updates",
    "train.max_epochs",
    "train.stop_at",
    "train.valid_every",
    "train.valid_max_batches",
    "train.save_every",
    "train.keep_last",
    "train.log_every",
    "train.max_bad_updates",
    "train.perplexity_warn_below",
    "train.chance_warn_after",
    "data.num_workers",  # the loader's position counts batches received, whatever the workers
    # Moved files (a copied run folder, hubert-iterate's labels inside it): the resumed run reads the new paths.
    "data.manifest_dir",
    "data.train_labels",
    "data.valid_labels",
)


class ResumeConfigError(ValueError):
    """The new config changes a key that a resumed run cannot honour."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def _normalised(values: dict) -> dict[str, Any]:
    """Defaults filled in (a key added since the checkpoint was saved is compared with its default)."""
    with contextlib.suppress(ValueError):  # a key since removed from the schema: compare what is there
        values = to_dict(from_dict(values))
    return _flat(parse_yaml(yaml.safe_dump(values, sort_keys=False)))


def honoured(key: str) -> bool:
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HONOURED)


def config_changes(saved_config_text: str, cfg: Config, *, source: str = "checkpoint") -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every key whose value differs, in the config's order.

    Both model sections are compared resolved (every family field), as step folders record them."""
    saved = parse_yaml(saved_config_text) or {}
    saved["model"] = to_dict(model_section(saved_config_text, source=source))
    old = _normalised(saved)
    new = _normalised(to_dict(replace(cfg, model=resolved_model(cfg.model))))
    missing = object()
    keys = list(new) + [k for k in old if k not in new]
    return [(k, old.get(k, missing), new.get(k, missing)) for k in keys if old.get(k, missing) != new.get(k, missing)]


def check_resume_changes(saved_config_text: str, cfg: Config, *, source: str) -> list[str]:
    """Raise ResumeConfigError naming every refused change; returns one log line per honoured change."""
    changes = config_changes(saved_config_text, cfg, source=source)
    refused = [(k, old, new) for k, old, new in changes if not honoured(k)]
    if refused:
        listed = "; ".join(f"{k}: {_show(old)} -> {_show(new)}" for k, old, new in refused)
        raise ResumeConfigError(
            f"cannot resume {source} with a changed config ({listed}): a resumed run honours only changes of "
            f"{', '.join(h.rstrip('.') + ('.*' if h.endswith('.') else '') for h in HONOURED)}; "
            "start a new run_dir (init.checkpoint continues from these weights)"
        )
    return [f"resume: {k} changed {_show(old)} -> {_show(new)} (applied)" for k, old, new in changes]


def _show(value: Any) -> str:
    return "(absent)" if type(value) is object else repr(value)


def apply_optimizer_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    fresh_groups: list[dict[str, Any]],
    peak_lr: float,
) -> None:
    """After loading a checkpoint's optimizer and scheduler state (which bring back the old hyperparameters and
    rates): the new config's hyperparameters, and this step's rate from the new peak and schedule."""
    scheduler.base_lrs = [peak_lr] * len(optimizer.param_groups)
    for group, fresh, multiplier in zip(optimizer.param_groups, fresh_groups, scheduler.lr_lambdas, strict=True):
        group.update({k: v for k, v in fresh.items() if k not in ("params", "lr", "initial_lr")})
        group["initial_lr"] = peak_lr
        group["lr"] = peak_lr * multiplier(scheduler.last_epoch)
