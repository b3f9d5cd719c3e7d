"""What every reader returns (`Imported`: our family, its config, the weights it could map), how a source's state
fills our family model (`gather`) and how the parts a source lacks start fresh (`complete_state`).

The one module of interop/ that reaches the family table: the format modules get presets and configs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ssl_audio.interop.keymap import KeyTable, fuse, translate
from ssl_audio.models.hubert import HubertConfig
from ssl_audio.models.registry import FAMILIES, ModelConfig, family_config
from ssl_audio.models.wav2vec2 import Wav2Vec2Config

# Our parameters that a source may lack: they are initialised fresh instead. Everything else is the trunk,
# which every source must provide in full.
OPTIONAL_PARTS = ("masker.", "quantizer.", "project_targets.", "project_context.", "final_proj.", "label_embeddings")
INIT_SEED = 0  # fresh parts are drawn from this seed, so a conversion is reproducible


@dataclass(frozen=True, kw_only=True)
class Imported:
    family: str  # wav2vec2, hubert, wavlm or whisper
    config: Wav2Vec2Config | HubertConfig
    state: dict[str, Tensor]  # our key names; may lack OPTIONAL_PARTS
    source: str  # the file or folder it was read from
    dropped: tuple[str, ...] = ()  # source keys with no place in our model (e.g. a CTC head)
    notes: tuple[str, ...] = ()  # what the reader could not carry over or had to assume
    untrained: tuple[str, ...] = ()  # parts in `state` that a conversion initialised fresh and no run has trained


def preset(family: str, name: str) -> Any:
    """The family config of preset `name` (base, large, ...)."""
    return FAMILIES[family].presets[name]()


def resolve_config(model: ModelConfig) -> Any:
    """The family config a config file's model section stands for (preset, overrides, checks)."""
    return family_config(model)


def expected_state(family: str, cfg: Any) -> dict[str, Tensor]:
    """Our model's parameter names and shapes, without allocating it (meta tensors)."""
    with torch.device("meta"):
        return FAMILIES[family].model_class(cfg).state_dict()


def gather(
    family: str, cfg: Any, theirs: dict[str, Tensor], table: KeyTable, *, source: str
) -> tuple[dict[str, Tensor], tuple[str, ...], tuple[str, ...]]:
    """Our state from `theirs`: `table` names the source key(s) holding each of ours (several are concatenated
    along dim 0: q, k, v into our fused qkv). Returns (state, unused source keys, notes).

    A missing or misshapen trunk parameter is an error; a missing or misshapen optional part is left out
    (and initialised fresh later), with a note when it was there but did not fit.
    """
    ours, used, notes, missing = {}, set(), [], []
    for key, like in expected_state(family, cfg).items():
        names = translate(key, table)
        optional = key.startswith(OPTIONAL_PARTS)
        if not names or not all(name in theirs for name in names):
            if not optional:
                missing.append(" + ".join(names) if names else key)
            continue
        value = fuse(theirs, names)
        if value.shape != like.shape:
            message = f"{' + '.join(names)} has shape {tuple(value.shape)}, {key} needs {tuple(like.shape)}"
            if not optional:
                raise ValueError(f"{source}: {message}")
            notes.append(f"{message}: initialised fresh instead")
            continue
        ours[key] = value
        used.update(names)
    if missing:
        shown = ", ".join(missing[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6 else "")
        raise ValueError(f"{source}: no weights for {shown}")
    return ours, tuple(sorted(set(theirs) - used)), tuple(notes)


def complete_state(imported: Imported) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """The full state of the family model: imported weights over a seeded fresh model. Returns (state, fresh parts):
    the parts the source lacked, and those it holds only as an earlier conversion's fresh initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model: nn.Module = FAMILIES[imported.family].model_class(imported.config)
    state = model.state_dict()
    fresh = sorted({_part(key) for key in state if key not in imported.state} | set(imported.untrained))
    state.update({k: v.detach().clone().contiguous() for k, v in imported.state.items()})
    return state, tuple(fresh)


def _part(key: str) -> str:
    """The module a parameter belongs to, for reports: quantizer.logits.weight -> quantizer."""
    return key.split(".")[0]
