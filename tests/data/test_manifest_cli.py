"""`ssl-audio manifest` on awkward folders: link loops, names a manifest cannot hold, roots it cannot name."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.data.manifest import load_manifest

pytestmark = pytest.mark.slow  # each test starts `ssl-audio`, which imports torch: about 4 s on a shared core

LENGTH = 8000  # samples at 16 kHz, written at 16 kHz: the manifest count is exactly this


def write_tone(path: Path) -> None:
    t = np.arange(LENGTH) / 16_000
    sf.write(path, (0.3 * np.sin(2 * math.pi * 220 * t)).astype(np.float32), 16_000)


def run_manifest(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "ssl_audio.cli", "manifest", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def all_rows(out: Path) -> list[str]:
    """Rows of train.tsv and valid.tsv (where it has any) as load_manifest reads them back."""
    rows = list(load_manifest(out / "train.tsv").paths)
    if len((out / "valid.tsv").read_text(encoding="utf-8").splitlines()) > 1:
        rows += load_manifest(out / "valid.tsv").paths
    return rows


def skipped_rows(out: Path) -> list[list[str]]:
    lines = (out / "skipped.tsv").read_text(encoding="utf-8").splitlines()  # strict UTF-8: raises if it is not
    assert lines[0] == "path\treason\tdetail"
    return [line.split("\t") for line in lines[1:]]


def test_a_folder_link_loop_lists_each_file_once(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    write_tone(audio / "a.wav")
    write_tone(audio / "sub" / "b.wav")
    (audio / "sub" / "up").symlink_to("..")  # audio/sub/up/sub/up/... never ends
    (audio / "again").symlink_to("sub")  # the same folder by a second name
    (audio / "b_too.wav").symlink_to("sub/b.wav")  # the same file by a second name
    out = tmp_path / "m"
    done = run_manifest(audio, "--out", out, "--valid-fraction", "0.5")
    assert done.returncode == 0, done.stderr
    rows = all_rows(out)
    assert sorted(rows) == ["a.wav", "sub/b.wav"]  # once each, by the path without a link
    assert len(load_manifest(out / "valid.tsv")) == 1  # one file in each part: none in both
    assert skipped_rows(out) == []


def test_a_name_that_is_not_utf8_is_skipped_with_its_reason(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    write_tone(audio / "good.wav")
    os.link(audio / "good.wav", bytes(audio / "caf") + b"\xe9.wav")  # a Latin-1 name: not UTF-8
    out = tmp_path / "m"
    done = run_manifest(audio, "--out", out, "--valid-fraction", "0")
    assert done.returncode == 0, done.stderr
    assert all_rows(out) == ["good.wav"]
    assert skipped_rows(out) == [[f"{audio}/caf\\xe9.wav", "unwritable_name", "name is not valid UTF-8"]]
    assert "unwritable_name: 1" in done.stdout


def test_tab_and_line_breaks_in_names_are_skipped_and_the_manifest_loads(tmp_path):
    audio = tmp_path / "audio"
    (audio / "new\nfolder").mkdir(parents=True)
    write_tone(audio / "good.wav")
    write_tone(audio / "tab\there.wav")
    write_tone(audio / "new\nfolder" / "x.wav")
    write_tone(audio / "page\x0cbreak.wav")  # str.splitlines ends a line here too
    out = tmp_path / "m"
    done = run_manifest(audio, "--out", out, "--valid-fraction", "0")
    assert done.returncode == 0, done.stderr
    assert all_rows(out) == ["good.wav"]  # load_manifest reads back what was written
    assert sorted(skipped_rows(out)) == [
        [f"{audio}/new\\nfolder/x.wav", "unwritable_name", "name holds '\\n', which the manifest format reserves"],
        [f"{audio}/page\\x0cbreak.wav", "unwritable_name", "name holds '\\x0c', which the manifest format reserves"],
        [f"{audio}/tab\\there.wav", "unwritable_name", "name holds '\\t', which the manifest format reserves"],
    ]


def test_a_root_the_manifest_cannot_name_is_a_one_line_error_that_keeps_old_manifests(tmp_path):
    audio = tmp_path / "bad\nroot"
    audio.mkdir()
    write_tone(audio / "good.wav")
    out = tmp_path / "m"
    out.mkdir()
    (out / "train.tsv").write_text("old train\n")
    done = run_manifest(audio, "--out", out)
    assert done.returncode == 2
    assert done.stderr == (
        f"ssl-audio manifest: error: root '{tmp_path}/bad\\nroot': cannot be a manifest's first line "
        "(name holds '\\n', which the manifest format reserves)\n"
    )
    assert sorted(os.listdir(out)) == ["train.tsv"] and (out / "train.tsv").read_text() == "old train\n"
