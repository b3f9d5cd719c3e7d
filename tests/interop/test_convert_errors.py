"""`ssl-audio convert` on files that are not checkpoints: one line on stderr naming the file and why, exit code 2.

The bad files are made from real ones (torch.save output cut short) or are what people feed by mistake (text,
plain pickles). Refused pickles must name the global they want, and that global must never run: the test
pickles call open(..., "w") on a marker file when loaded.
"""

from __future__ import annotations

import decimal
import fractions
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_audio.interop.convert import convert
from ssl_audio.interop.unpickle import pickle_globals

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real `ssl-audio` command in a child Python that imports this checkout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ssl_audio.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, expected: str) -> str:
    """Exit code 2 and exactly one stderr line, `ssl-audio COMMAND: error: ...` containing `expected`."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ssl-audio {command}: error: ")
    assert expected in lines[0], lines[0]
    return lines[0]


class Touch:
    """Unpickling this calls open(path, "w"): the marker file appears only if the pickle's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def small_checkpoint(path: Path) -> Path:
    """A real torch.save file in fairseq's layout (plain containers)."""
    torch.save(
        {
            "cfg": {"model": {"_name": "hubert"}},
            "model": {"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(0))},
        },
        path,
    )
    return path


def kept_destination(tmp_path: Path) -> Path:
    """A run folder that already holds a file: a failed conversion must leave it as it was."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me\n")
    return run


def assert_kept(run: Path) -> None:
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert (run / "notes.txt").read_text() == "keep me\n"


@pytest.mark.slow
def test_truncated_torch_file_is_named_without_traceback(tmp_path: Path):
    whole = small_checkpoint(tmp_path / "whole.pt")
    assert torch.load(whole, weights_only=True)["model"]["w"].shape == (64, 64)  # the uncut file is fine
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    run = kept_destination(tmp_path)
    assert_one_line_error(run_cli("convert", str(cut), str(run)), "convert", f"{cut}: truncated or corrupt torch file")
    assert_kept(run)


@pytest.mark.slow
def test_text_file_is_named_as_not_a_torch_file(tmp_path: Path):
    text = tmp_path / "notes.pt"
    text.write_text("this is a README, not a checkpoint\n")
    run = kept_destination(tmp_path)
    assert_one_line_error(run_cli("convert", str(text), str(run)), "convert", f"{text}: truncated or not a torch file")
    assert_kept(run)


@pytest.mark.slow
def test_raw_protocol_4_pickle_names_the_refused_global(tmp_path: Path):
    """torch's weights-only reader cannot parse protocol 4 at all; the refusal still names what it would call."""
    path = tmp_path / "system.pt"
    path.write_bytes(pickle.dumps(os.system, protocol=4))
    run = kept_destination(tmp_path)
    line = assert_one_line_error(run_cli("convert", str(path), str(run)), "convert", f"{path}: refused to unpickle")
    assert f"{os.system.__module__}.{os.system.__name__}" in line and "--trust-pickle" in line
    assert_kept(run)


@pytest.mark.slow
def test_raw_protocol_4_pickle_of_an_instance_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "touch.pt"
    path.write_bytes(pickle.dumps({"model": {}, "payload": Touch(marker)}, protocol=4))
    run = kept_destination(tmp_path)
    line = assert_one_line_error(run_cli("convert", str(path), str(run)), "convert", f"{path}: refused to unpickle")
    assert f"{open.__module__}.{open.__qualname__}" in line  # io.open: what Touch's __reduce__ names
    assert not marker.exists()
    assert_kept(run)


def test_every_global_of_a_legacy_torch_file_is_named(tmp_path: Path):
    """torch's own message names only the first refused global; the static scan finds all, past the 5-pickle
    header of the legacy format, and leaves torch's allowed ones (tensor rebuilds) out."""
    path = tmp_path / "legacy.pt"
    checkpoint = {"model": {"w": torch.zeros(3)}, "lr": fractions.Fraction(1, 3), "eps": decimal.Decimal("0.1")}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"refused to unpickle fractions\.Fraction, decimal\.Decimal: ") as err:
        convert(path, tmp_path / "run")
    assert "torch." not in str(err.value)
    assert not (tmp_path / "run").exists()
    scanned = pickle_globals(path)
    assert {"fractions.Fraction", "decimal.Decimal"} <= set(scanned)


def test_plain_pickle_without_code_is_not_called_a_torch_file(tmp_path: Path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"model": {}}, protocol=4))
    assert pickle_globals(path) == []
    for trust in (False, True):  # torch.load cannot read it either way: it lacks torch's header
        with pytest.raises(ValueError, match=r"plain\.pt: a plain pickle \(protocol 4\), not a checkpoint written"):
            convert(path, tmp_path / "run", trust_pickle=trust)


@pytest.mark.parametrize("content", [b"", b"hello\n"])
def test_torchaudio_state_dict_that_is_not_one_is_named(tmp_path: Path, content: bytes):
    path = tmp_path / "state.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"state\.pt: (empty file|truncated or not a torch file)"):
        convert(path, tmp_path / "run", source="torchaudio", builder="wav2vec2_base")


@pytest.mark.slow  # importing transformers
def test_truncated_safetensors_of_a_transformers_folder_is_named(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "hf"
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{weights}: truncated or not a safetensors file"):
        convert(folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()
