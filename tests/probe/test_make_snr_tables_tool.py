"""tools/make_snr_tables.py: the command line of ssl_audio.demo.snr_tables (its tables: test_snr.py; here beside
the noise corpus fixture of tests/probe/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_audio.data.probe_table import read_table
from ssl_audio.probe.snr import table_snrs
from tools import make_snr_tables


def test_snrs_option_and_no_clean(noise_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clean = noise_corpus / "clean" / "test.tsv"
    assert make_snr_tables.main([str(clean), "--out", str(tmp_path), "--snrs", "7.5,-3", "--no-clean"]) == 0
    assert f"wrote {tmp_path / 'test_snr.tsv'}" in capsys.readouterr().out
    table = read_table(tmp_path / "test_snr.tsv")
    n = len(read_table(clean))
    assert table_snrs(table) == [7.5] * n + [-3.0] * n
    assert (tmp_path / "snr7.5" / "audio").is_dir() and (tmp_path / "snr-3" / "audio").is_dir()
    with pytest.raises(SystemExit):
        make_snr_tables.main([str(clean), "--out", str(tmp_path), "--snrs", "5,loud"])
