import errno
import math
import os

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import load_audio
from ssl_audio.cli import main
from ssl_audio.data import manifest as manifest_module
from ssl_audio.data.manifest import (
    build_manifests,
    has_split,
    load_manifest,
    load_split,
    scan,
    split_rows,
    write_manifest,
)


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * math.pi * 220 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture
def broken_dir(tmp_path):
    """Good files at several rates and channel counts beside one of each kind of broken file."""
    root = tmp_path / "corpus"
    (root / "a" / "b").mkdir(parents=True)
    sf.write(root / "good_16k.wav", tone(1.0, 16_000), 16_000)
    sf.write(root / "a" / "stereo_44k1.wav", tone(0.5, 44_100, channels=2), 44_100)
    sf.write(root / "a" / "b" / "narrow_8k.flac", tone(0.75, 8_000), 8_000)
    sf.write(root / "a" / "float.wav", tone(0.3, 16_000), 16_000, subtype="FLOAT")
    (root / "empty.wav").write_bytes(b"")
    full = (root / "good_16k.wav").read_bytes()
    (root / "truncated_header.wav").write_bytes(full[:30])
    (root / "text.wav").write_text("hello, I am not a wav file\n" * 10)
    nan = tone(0.5, 16_000)
    nan[100:200] = np.nan
    sf.write(root / "nan.wav", nan, 16_000, subtype="FLOAT")
    sf.write(root / "hundred.wav", tone(100 / 16_000, 16_000), 16_000)
    (root / "notes.txt").write_text("ignored: not an audio extension")
    return root


EXPECTED_SKIPS = {
    "empty.wav": "empty",
    "truncated_header.wav": "unreadable",
    "text.wav": "unreadable",
    "nan.wav": "non_finite",
    "hundred.wav": "too_short",
}


def test_scan_reports_each_broken_file_and_keeps_the_good_ones(broken_dir):
    result = scan([broken_dir], workers=2)
    skipped = {p.split("/")[-1]: reason for p, reason, _ in result.skipped}
    assert skipped == EXPECTED_SKIPS
    kept = dict(result.kept)
    assert set(kept) == {"good_16k.wav", "a/stereo_44k1.wav", "a/b/narrow_8k.flac", "a/float.wav"}
    # Header lengths are exactly what loading yields at 16 kHz.
    for rel, num_samples in kept.items():
        assert load_audio(broken_dir / rel).numel() == num_samples, rel
    assert kept["a/stereo_44k1.wav"] == math.ceil(22_050 * 16_000 / 44_100)
    assert kept["a/b/narrow_8k.flac"] == 12_000


def test_full_check_catches_silence_in_integer_files(broken_dir):
    sf.write(broken_dir / "quiet.wav", np.zeros(16_000, np.float32), 16_000)
    assert "quiet.wav" not in {p.split("/")[-1] for p, _, _ in scan([broken_dir]).skipped}
    full = {p.split("/")[-1]: r for p, r, _ in scan([broken_dir], full_check=True).skipped}
    assert full["quiet.wav"] == "silent"


def test_build_manifests_writes_tsvs_and_a_skip_list(broken_dir, tmp_path):
    out = tmp_path / "manifest"
    summary = build_manifests([broken_dir], out, valid_fraction=0.25, seed=3)
    assert summary["train_files"] == 3 and summary["valid_files"] == 1
    assert summary["skipped"] == {"empty": 1, "unreadable": 2, "non_finite": 1, "too_short": 1}
    train, valid = load_manifest(out / "train.tsv"), load_manifest(out / "valid.tsv")
    assert train.root == broken_dir.resolve()
    assert set(train.paths).isdisjoint(valid.paths) and len(set(train.paths) | set(valid.paths)) == 4
    skipped_lines = (out / "skipped.tsv").read_text().splitlines()
    assert skipped_lines[0] == "path\treason\tdetail" and len(skipped_lines) == 1 + len(EXPECTED_SKIPS)
    # Same seed, same split; the split changes with the seed for some seed.
    again = tmp_path / "again"
    build_manifests([broken_dir], again, valid_fraction=0.25, seed=3)
    assert (again / "valid.tsv").read_text() == (out / "valid.tsv").read_text()
    splits = {tuple(split_rows([(str(i), 400) for i in range(20)], 0.25, seed)[1]) for seed in range(5)}
    assert len(splits) > 1


def test_min_and_max_seconds_filter(broken_dir):
    result = scan([broken_dir], min_seconds=0.4, max_seconds=0.9)
    reasons = {p.split("/")[-1]: r for p, r, _ in result.skipped}
    assert reasons["good_16k.wav"] == "longer_than_max"
    assert reasons["float.wav"] == "shorter_than_min"
    assert {rel for rel, _ in result.kept} == {"a/stereo_44k1.wav", "a/b/narrow_8k.flac"}


def test_cli_manifest_prints_summary(broken_dir, tmp_path, capsys):
    assert main(["manifest", str(broken_dir), "--out", str(tmp_path / "m"), "--valid-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "4 train files" in out and "skipped 5 files" in out and "non_finite: 1" in out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{root}\nx.wav\t1600\ny.wav\n", ":3: expected 'path<TAB>num_samples'"),
        ("{root}\nx.wav\tmany\n", ":2: num_samples must be an integer"),
        ("{root}\nx.wav\t12\n", ":2: num_samples must be an integer >= 400"),
        ("{root}\nmissing.wav\t1600\n", ":2: "),
        ("/no/such/root\nx.wav\t1600\n", ":1: root '/no/such/root' is not a directory"),
        ("{root}\n/abs/x.wav\t1600\n", ":2: path '/abs/x.wav' must be relative"),
        ("", ":1: empty manifest"),
    ],
)
def test_load_manifest_errors_name_the_line(tmp_path, body, message):
    sf.write(tmp_path / "x.wav", tone(0.1, 16_000), 16_000)
    path = tmp_path / "bad.tsv"
    path.write_text(body.format(root=tmp_path))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("|", r"\|")) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_write_then_load_round_trips(tmp_path):
    sf.write(tmp_path / "x.wav", tone(0.1, 16_000), 16_000)
    write_manifest(tmp_path / "m.tsv", tmp_path, [("x.wav", 1600)])
    manifest = load_manifest(tmp_path / "m.tsv")
    assert manifest.paths == ("x.wav",) and manifest.num_samples == (1600,)
    assert manifest.audio_path(0) == tmp_path / "x.wav" and manifest.seconds == pytest.approx(0.1)


@pytest.mark.parametrize("check_files", [True, False])
@pytest.mark.parametrize("rel", ["../../../../etc/passwd", "../other/x.wav", "a/../../other/x.wav", ".."])
def test_load_manifest_refuses_rows_that_leave_the_root(tmp_path, rel, check_files):
    root, other = tmp_path / "root", tmp_path / "other"
    (root / "a").mkdir(parents=True)
    other.mkdir()
    sf.write(other / "x.wav", tone(0.1, 16_000), 16_000)  # exists: without the check it would train silently
    path = tmp_path / "m.tsv"
    path.write_text(f"{root}\nok.wav\t1600\n{rel}\t1600\n")
    sf.write(root / "ok.wav", tone(0.1, 16_000), 16_000)
    with pytest.raises(ValueError) as info:
        load_manifest(path, check_files=check_files)
    assert str(info.value) == f"{path}:3: path {rel!r} leaves the root {str(root)!r}"


def test_rows_that_climb_but_stay_inside_and_links_out_of_the_root_are_allowed(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "a").mkdir(parents=True)
    elsewhere.mkdir()
    sf.write(root / "x.wav", tone(0.1, 16_000), 16_000)
    sf.write(elsewhere / "y.wav", tone(0.2, 16_000), 16_000)
    (root / "linked").symlink_to(elsewhere)  # the user's own link out of the root: followed, once
    result = scan([root])
    assert result.kept == [("linked/y.wav", 3200), ("x.wav", 1600)]  # the path through the link, not ../
    write_manifest(tmp_path / "m.tsv", result.root, [*result.kept, ("a/../x.wav", 1600)])
    manifest = load_manifest(tmp_path / "m.tsv")
    assert manifest.paths == ("linked/y.wav", "x.wav", "a/../x.wav")


def test_write_manifest_refuses_a_row_it_could_not_read_back(tmp_path):
    with pytest.raises(ValueError, match=r"^row 'a\\tb.wav': cannot be written to a manifest \(name holds"):
        write_manifest(tmp_path / "m.tsv", tmp_path, [("a\tb.wav", 1600)])
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_all_three_previous_files_intact(broken_dir, tmp_path, monkeypatch):
    out = tmp_path / "manifest"
    build_manifests([broken_dir], out, valid_fraction=0.25, seed=3)
    before = {name: (out / name).read_bytes() for name in ("train.tsv", "valid.tsv", "skipped.tsv")}

    def disk_full_for_skipped(file, mode="r", *args, **kwargs):
        if "skipped" in os.fspath(file) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(file))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(manifest_module, "open", disk_full_for_skipped, raising=False)
    with pytest.raises(OSError, match="No space left on device"):
        build_manifests([broken_dir], out, valid_fraction=0.5, seed=4)  # another split: train and valid change
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(out)) == sorted(before)  # no temp file left behind


# -- the splits of a manifest folder ---------------------------------------------------------------------------


def test_has_split_needs_a_manifest_with_rows(tmp_path):
    assert not has_split(tmp_path, "valid")  # no valid.tsv
    (tmp_path / "valid.tsv").write_text(f"{tmp_path}\n")  # what `ssl-audio manifest` writes for no valid share
    assert not has_split(tmp_path, "valid")
    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "valid.tsv").write_text(f"{tmp_path}\na.wav\t1600\n")
    assert has_split(tmp_path, "valid")
    assert load_split(tmp_path, "valid").paths == ("a.wav",)
    assert not has_split(tmp_path, "train")


def test_an_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'valid'\), got 'test'"):
        has_split(tmp_path, "test")
