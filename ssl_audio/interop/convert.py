"""`ssl-audio convert`: import wav2vec 2.0 / HuBERT / WavLM from fairseq, Hugging Face transformers and
torchaudio into our step folders, and export our checkpoints to transformers.

This module only dispatches: it guesses the source format, calls that format's reader (fairseq.py, hf.py,
torchaudio.py, or our own step folder), and writes our step folder or, through hf.py, a transformers folder.
Every reader returns an `Imported` (imported.py). Writers first complete the weights: the parts a source does
not have (a transformers Wav2Vec2Model has no quantizer, HubertModel no label heads, fairseq's WavLM no heads
at all) get a seeded fresh initialisation, and the result says which parts those were.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ssl_audio.configs import to_dict
from ssl_audio.interop.fairseq import load_checkpoint as load_fairseq_checkpoint
from ssl_audio.interop.fairseq import read_fairseq_checkpoint
from ssl_audio.interop.fairseq_ctc import DICT_NAME, imported_ctc, is_fine_tuned
from ssl_audio.interop.hf import read_hf, write_hf
from ssl_audio.interop.hf_ctc import VOCAB_FILE, is_ctc_folder, read_hf_ctc, write_hf_ctc
from ssl_audio.interop.hf_whisper import is_whisper_folder, read_hf_whisper, write_hf_whisper
from ssl_audio.interop.imported import Imported, complete_state, expected_state, resolve_config
from ssl_audio.interop.torchaudio import read_torchaudio
from ssl_audio.models.loading import check_compatible, model_section
from ssl_audio.models.registry import ModelConfig
from ssl_audio.step_folder import CONFIG_FILE, load_checkpoint
from ssl_audio.train.checkpoint import save_checkpoint, step_dir
from ssl_audio.train.config import Config

SOURCES = ("fairseq", "hf", "torchaudio", "ssl_audio")
TARGETS = ("ssl_audio", "hf")
IMPORT_STEP = 0  # imported models become step 0 of a run: continued pretraining starts from there
UNTRAINED_KEY = "untrained_parts"  # train_state.pt of a converted step folder: the parts initialised fresh


@dataclass(frozen=True, kw_only=True)
class Converted:
    path: Path  # the step folder or transformers folder written
    fresh: tuple[str, ...]  # our parameters the source lacked, initialised fresh (ssl_audio target)
    dropped: tuple[str, ...]  # source parameters the target has no place for
    notes: tuple[str, ...]


def run_config(imported: Imported, run_dir: Path) -> Config:
    """A full Config whose model section rebuilds this architecture (every family field spelled out)."""
    model = ModelConfig(family=imported.family, preset="base", config=to_dict(imported.config))  # type: ignore[arg-type]
    assert resolve_config(model) == imported.config, "the config dict must rebuild the same family config"
    return Config(run_dir=str(run_dir), model=model)


def write_step_folder(imported: Imported, run_dir: Path) -> Converted:
    """Our checkpoint layout: <run_dir>/step_00000000 with weights, an empty train state and the config."""
    if step_dir(run_dir, IMPORT_STEP).exists():
        raise ValueError(f"{step_dir(run_dir, IMPORT_STEP)}: already exists; remove it or choose another DST")
    state, fresh = complete_state(imported)
    config_text = yaml.safe_dump(to_dict(run_config(imported, run_dir)), sort_keys=False)
    # The fresh parts are recorded so that an export of this folder leaves them out (a headless model goes back
    # headless); a run that trains from here writes step folders without the record: its heads are trained.
    train_state = {UNTRAINED_KEY: list(fresh)}
    path = save_checkpoint(run_dir, IMPORT_STEP, model_state=state, train_state=train_state, config_text=config_text)
    return Converted(path=path, fresh=fresh, dropped=imported.dropped, notes=imported.notes)


def read_step_folder(path: Path) -> Imported:
    """One of our step folders, as a source for export."""
    checkpoint = load_checkpoint(path)
    model_cfg = model_section(checkpoint.config_text, source=str(path / CONFIG_FILE))
    family_cfg = resolve_config(model_cfg)
    check_compatible(expected_state(model_cfg.family, family_cfg), checkpoint.model_state, source=str(path))
    untrained = tuple(checkpoint.train_state.get(UNTRAINED_KEY, ()))
    return Imported(
        family=model_cfg.family, config=family_cfg, state=checkpoint.model_state, source=str(path), untrained=untrained
    )


def guess_source(src: Path) -> str:
    """fairseq for a file, hf for a folder with config.json, ssl_audio for a step folder."""
    if src.is_file():
        return "fairseq"
    if (src / "config.json").is_file():
        return "hf"
    if (src / "config.yaml").is_file() and (src / "meta.json").is_file():
        return "ssl_audio"
    raise ValueError(f"{src}: not a checkpoint file, a transformers folder (config.json) or a step folder (meta.json)")


def read(
    src: Path, source: str, *, builder: str | None = None, trust_pickle: bool = False, dictionary: Path | None = None
) -> Imported:
    """A fine-tuned CTC checkpoint (fairseq wav2vec_ctc, transformers *ForCTC) becomes a `finetune` model with its
    head and vocabulary; any other one its pretraining family's model."""
    if source == "fairseq":
        checkpoint = load_fairseq_checkpoint(src, trust_pickle=trust_pickle)
        beside = src.with_name(DICT_NAME)
        if is_fine_tuned(checkpoint) and (dictionary is not None or beside.is_file()):
            return imported_ctc(checkpoint, dictionary or beside, source=str(src))
        trunk = read_fairseq_checkpoint(checkpoint, source=str(src))
        if is_fine_tuned(checkpoint):  # without its dictionary the head's rows have no names: the trunk alone
            return replace(trunk, notes=trunk.notes + (f"no {DICT_NAME} next to {src} (--dict): CTC head left out",))
        return trunk
    if source == "hf":
        if is_whisper_folder(src):
            return read_hf_whisper(src)
        if is_ctc_folder(src) and (src / VOCAB_FILE).is_file():
            return read_hf_ctc(src)
        trunk = read_hf(src)
        if is_ctc_folder(src):  # without vocab.json the head's rows have no names: the trunk alone
            return replace(trunk, notes=trunk.notes + (f"no {VOCAB_FILE} in {src}: CTC head (lm_head) left out",))
        return trunk
    if source == "torchaudio":
        return read_torchaudio(src, builder, trust_pickle=trust_pickle)
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
    dictionary: str | Path | None = None,
) -> Converted:
    """Read `src` (format `source`, guessed when None) and write it to `dst` in format `target`.

    ssl_audio: `dst` is a run folder and gets step_00000000/. hf: `dst` becomes a transformers folder (a *ForCTC
    one, with vocab.json and tokenizer, for a fine-tuned CTC model). `dictionary`: a fine-tuned fairseq
    checkpoint's dict.ltr.txt (default: the one next to it).
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ValueError(f"{src}: no such file or folder")
    if target not in TARGETS:
        raise ValueError(f"--to must be one of {list(TARGETS)}, got {target!r}")
    source = source or guess_source(src)
    if source == target == "ssl_audio":
        raise ValueError(f"{src}: already an ssl_audio checkpoint; nothing to convert")
    imported = read(
        src, source, builder=builder, trust_pickle=trust_pickle, dictionary=Path(dictionary) if dictionary else None
    )
    if target == "ssl_audio":
        return write_step_folder(imported, dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst}: exists and is not an empty folder; choose a new folder")
    state, fresh = complete_state(imported)
    tmp = dst.with_name(f".{dst.name}.tmp")  # written whole, then renamed: no half-written model folder
    if tmp.exists():
        shutil.rmtree(tmp)
    if imported.family == "finetune":
        dropped = write_hf_ctc(imported, state, tmp)
    elif imported.family == "whisper":
        dropped = write_hf_whisper(imported.config, state, tmp)
    else:
        dropped = write_hf(imported.family, imported.config, state, tmp, fresh=fresh)
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    exported_fresh = tuple(part for part in fresh if part not in dropped)
    left_out = tuple(part for part in fresh if part in dropped)
    notes = (
        imported.notes
        + tuple(f"{part}: not in the source, exported freshly initialised" for part in exported_fresh)
        + tuple(f"{part}: never trained (a conversion's fresh initialisation), left out" for part in left_out)
    )
    return Converted(path=dst, fresh=exported_fresh, dropped=imported.dropped + dropped, notes=notes)
