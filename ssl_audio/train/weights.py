"""Loading weights into a model with a clear refusal when the architectures differ."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Parts a continued-pretraining run may start fresh instead of loading, by family option.
QUANTIZER_PARTS = ("quantizer.", "project_targets.")  # wav2vec2's codebook and its projection
HEAD_PARTS = ("final_proj.", "label_embeddings")  # HuBERT / WavLM's label heads


def check_compatible(
    expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], *, source: str, skip: Sequence[str] = ()
) -> None:
    """Raise ValueError listing every missing, unexpected or reshaped parameter (except `skip` prefixes)."""
    wanted = {k: v for k, v in expected.items() if not k.startswith(tuple(skip))}
    missing = sorted(set(wanted) - set(loaded))
    unexpected = sorted(k for k in set(loaded) - set(expected) if not k.startswith(tuple(skip)))
    reshaped = sorted(
        f"{k} {tuple(loaded[k].shape)} vs {tuple(v.shape)}"
        for k, v in wanted.items()
        if k in loaded and loaded[k].shape != v.shape
    )
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch (checkpoint vs model)", reshaped),
    ):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError(f"{source} does not fit this model's architecture; " + "; ".join(problems))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, skip: Sequence[str] = ()) -> None:
    """Copy `state` into `model` after check_compatible; parameters under `skip` keep their fresh values."""
    own = model.state_dict()
    check_compatible(own, state, source=source, skip=skip)
    kept = {k: v for k, v in state.items() if k in own and not k.startswith(tuple(skip))}
    model.load_state_dict({**own, **kept})
