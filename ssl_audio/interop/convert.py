"""`ssl-audio convert`: import wav2vec 2.0 / HuBERT / WavLM from fairseq, Hugging Face transformers and
torchaudio into our step folders, and export our checkpoints to transformers.

Every reader returns an `Imported`: our family, its config and the weights it could map, under our key
names. Writers first complete the weights: the parts a source does not have (a transformers Wav2Vec2Model
has no quantizer, HubertModel no label heads, fairseq's WavLM no heads at all) get a seeded fresh
initialisation, and the result says which parts those were.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from ssl_audio.configs import to_dict
from ssl_audio.interop.unpickle import load_torch_file
from ssl_audio.models.hubert import HubertConfig
from ssl_audio.models.loading import check_compatible, model_section
from ssl_audio.models.registry import FAMILIES, ModelConfig, family_config
from ssl_audio.models.wav2vec2 import Wav2Vec2Config
from ssl_audio.step_folder import CONFIG_FILE, load_checkpoint
from ssl_audio.train.checkpoint import save_checkpoint, step_dir
from ssl_audio.train.config import Config

SOURCES = ("fairseq", "hf", "torchaudio", "ssl_audio")
TARGETS = ("ssl_audio", "hf")
# Our parameters that a source may lack: they are initialised fresh instead. Everything else is the trunk,
# which every source must provide in full.
OPTIONAL_PARTS = ("masker.", "quantizer.", "project_targets.", "project_context.", "final_proj.", "label_embeddings")
INIT_SEED = 0  # fresh parts are drawn from this seed, so a conversion is reproducible
IMPORT_STEP = 0  # imported models become step 0 of a run: continued pretraining starts from there

# (our key prefix, their key prefix); "{i}" stands for a layer index. A prefix ending in "." maps a whole
# module; any other row maps exactly one key.
KeyTable = list[tuple[str, str]]


@dataclass(frozen=True, kw_only=True)
class Imported:
    family: str  # wav2vec2, hubert or wavlm
    config: Wav2Vec2Config | HubertConfig
    state: dict[str, Tensor]  # our key names; may lack OPTIONAL_PARTS
    source: str  # the file or folder it was read from
    dropped: tuple[str, ...] = ()  # source keys with no place in our model (e.g. a CTC head)
    notes: tuple[str, ...] = ()  # what the reader could not carry over or had to assume


@dataclass(frozen=True, kw_only=True)
class Converted:
    path: Path  # the step folder or transformers folder written
    fresh: tuple[str, ...]  # our parameters the source lacked, initialised fresh (ssl_audio target)
    dropped: tuple[str, ...]  # source parameters the target has no place for
    notes: tuple[str, ...]


def translate(key: str, table: KeyTable) -> str | None:
    """Our `key` under the source's names, by the first matching row of `table`; None when no row matches."""
    for ours, theirs in table:
        pattern = re.escape(ours).replace(re.escape("{i}"), r"(?P<i>\d+)")
        match = re.match(pattern, key)
        if match is None or (not ours.endswith(".") and match.end() != len(key)):
            continue
        index = match.groupdict().get("i")
        return (theirs.replace("{i}", index) if index is not None else theirs) + key[match.end() :]
    return None


def expected_state(family: str, cfg: Any) -> dict[str, Tensor]:
    """Our model's parameter names and shapes, without allocating it (meta tensors)."""
    with torch.device("meta"):
        return FAMILIES[family].model_class(cfg).state_dict()


def gather(
    family: str, cfg: Any, theirs: dict[str, Tensor], locate: Callable[[str], list[str]], *, source: str
) -> tuple[dict[str, Tensor], tuple[str, ...], tuple[str, ...]]:
    """Our state from `theirs`: `locate(our_key)` names the source key(s) holding it (several are concatenated
    along dim 0: q, k, v into our fused qkv). Returns (state, unused source keys, notes).

    A missing or misshapen trunk parameter is an error; a missing or misshapen optional part is left out
    (and initialised fresh later), with a note when it was there but did not fit.
    """
    ours, used, notes, missing = {}, set(), [], []
    for key, like in expected_state(family, cfg).items():
        names = locate(key)
        optional = key.startswith(OPTIONAL_PARTS)
        if not names or not all(name in theirs for name in names):
            if not optional:
                missing.append(" + ".join(names) if names else key)
            continue
        value = theirs[names[0]] if len(names) == 1 else torch.cat([theirs[name] for name in names], dim=0)
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
    """The full state of the family model: imported weights over a seeded fresh model. Returns (state, fresh parts)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model: nn.Module = FAMILIES[imported.family].model_class(imported.config)
    state = model.state_dict()
    fresh = sorted({_part(key) for key in state if key not in imported.state})
    state.update({k: v.detach().clone().contiguous() for k, v in imported.state.items()})
    return state, tuple(fresh)


def _part(key: str) -> str:
    """The module a parameter belongs to, for reports: quantizer.logits.weight -> quantizer."""
    return key.split(".")[0]


def run_config(imported: Imported, run_dir: Path) -> Config:
    """A full Config whose model section rebuilds this architecture (every family field spelled out)."""
    model = ModelConfig(family=imported.family, preset="base", config=to_dict(imported.config))  # type: ignore[arg-type]
    assert family_config(model) == imported.config, "the config dict must rebuild the same family config"
    return Config(run_dir=str(run_dir), model=model)


def write_step_folder(imported: Imported, run_dir: Path) -> Converted:
    """Our checkpoint layout: <run_dir>/step_00000000 with weights, an empty train state and the config."""
    if step_dir(run_dir, IMPORT_STEP).exists():
        raise ValueError(f"{step_dir(run_dir, IMPORT_STEP)}: already exists; remove it or choose another DST")
    state, fresh = complete_state(imported)
    config_text = yaml.safe_dump(to_dict(run_config(imported, run_dir)), sort_keys=False)
    path = save_checkpoint(run_dir, IMPORT_STEP, model_state=state, train_state={}, config_text=config_text)
    return Converted(path=path, fresh=fresh, dropped=imported.dropped, notes=imported.notes)


def read_step_folder(path: Path) -> Imported:
    """One of our step folders, as a source for export."""
    checkpoint = load_checkpoint(path)
    model_cfg = model_section(checkpoint.config_text, source=str(path / CONFIG_FILE))
    family_cfg = family_config(model_cfg)
    check_compatible(expected_state(model_cfg.family, family_cfg), checkpoint.model_state, source=str(path))
    return Imported(family=model_cfg.family, config=family_cfg, state=checkpoint.model_state, source=str(path))


def _read_torchaudio(path: Path, builder: str | None, *, trust_pickle: bool = False) -> Imported:
    """A state dict saved from a torchaudio model (`torch.save(model.state_dict(), path)`) and its builder name."""
    import torchaudio.models

    from ssl_audio.interop.torchaudio import config_from_torchaudio, state_from_torchaudio

    builders = [n for n in dir(torchaudio.models) if n.startswith(("wav2vec2_", "hubert_", "wavlm_"))]
    builders = [n for n in builders if n not in ("wav2vec2_model", "hubert_pretrain_model", "wavlm_model")]
    if builder not in builders:
        raise ValueError(f"{path}: --builder must name the torchaudio builder of the state dict, one of {builders}")
    theirs = load_torch_file(path, trust_pickle=trust_pickle)  # weights_only: tensors and containers only
    if not isinstance(theirs, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(theirs).__name__}")
    head = tuple(k for k in theirs if k.startswith("aux."))  # a fine-tuned CTC head
    reference = getattr(torchaudio.models, builder)()
    try:
        reference.load_state_dict({k: v for k, v in theirs.items() if k not in head})
    except RuntimeError as err:
        raise ValueError(f"{path}: does not fit torchaudio's {builder}: {err}") from None
    encoder_cfg = config_from_torchaudio(reference)
    family = builder.split("_")[0]
    preset = "large" if any(word in builder for word in ("large", "xlsr", "xlarge")) else "base"
    family_cfg = replace(FAMILIES[family].presets[preset](), encoder=encoder_cfg)
    trunk = getattr(reference, "wav2vec2", reference)  # hubert_pretrain_* builders wrap the trunk
    encoder_state = state_from_torchaudio(trunk.state_dict(), encoder_cfg)
    state = {f"encoder.{k}": v for k, v in encoder_state.items()}
    heads = tuple(k for k in theirs if trunk is not reference and not k.startswith("wav2vec2."))
    notes = (f"only the encoder is taken from torchaudio; training settings are the {family} {preset} preset's",)
    return Imported(family=family, config=family_cfg, state=state, source=str(path), dropped=head + heads, notes=notes)


def guess_source(src: Path) -> str:
    """fairseq for a file, hf for a folder with config.json, ssl_audio for a step folder."""
    if src.is_file():
        return "fairseq"
    if (src / "config.json").is_file():
        return "hf"
    if (src / "config.yaml").is_file() and (src / "meta.json").is_file():
        return "ssl_audio"
    raise ValueError(f"{src}: not a checkpoint file, a transformers folder (config.json) or a step folder (meta.json)")


def read(src: Path, source: str, *, builder: str | None = None, trust_pickle: bool = False) -> Imported:
    if source == "fairseq":
        from ssl_audio.interop.fairseq import read_fairseq

        return read_fairseq(src, trust_pickle=trust_pickle)
    if source == "hf":
        from ssl_audio.interop.hf import read_hf

        return read_hf(src)
    if source == "torchaudio":
        return _read_torchaudio(src, builder, trust_pickle=trust_pickle)
    if source == "ssl_audio":
        return read_step_folder(src)
    raise ValueError(f"--from must be one of {list(SOURCES)}, got {source!r}")


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    source: str | None = None,
    target: str = "ssl_audio",
    builder: str | None = None,
    trust_pickle: bool = False,
) -> Converted:
    """Read `src` (format `source`, guessed when None) and write it to `dst` in format `target`.

    ssl_audio: `dst` is a run folder and gets step_00000000/. hf: `dst` becomes a transformers folder.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ValueError(f"{src}: no such file or folder")
    if target not in TARGETS:
        raise ValueError(f"--to must be one of {list(TARGETS)}, got {target!r}")
    source = source or guess_source(src)
    if source == target == "ssl_audio":
        raise ValueError(f"{src}: already an ssl_audio checkpoint; nothing to convert")
    imported = read(src, source, builder=builder, trust_pickle=trust_pickle)
    if target == "ssl_audio":
        return write_step_folder(imported, dst)
    from ssl_audio.interop.hf import write_hf

    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst}: exists and is not an empty folder; choose a new folder")
    state, fresh = complete_state(imported)
    tmp = dst.with_name(f".{dst.name}.tmp")  # written whole, then renamed: no half-written model folder
    if tmp.exists():
        shutil.rmtree(tmp)
    dropped = write_hf(imported.family, imported.config, state, tmp, fresh=fresh)
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    exported_fresh = tuple(part for part in fresh if part not in dropped)
    notes = imported.notes + tuple(
        f"{part}: not in the source, exported freshly initialised" for part in exported_fresh
    )
    return Converted(path=dst, fresh=exported_fresh, dropped=imported.dropped + dropped, notes=notes)
