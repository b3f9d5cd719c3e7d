import errno
import os
from pathlib import Path

import pytest

from ssl_audio import atomic


def test_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    target.write_text("old")
    atomic.write_text(target, '{"k": 10}')
    assert target.read_text() == '{"k": 10}' and os.listdir(tmp_path) == ["meta.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "meta.json"
    target.write_text("old")

    def disk_full(self: Path, text: str, encoding: str) -> None:
        with open(self, "w", encoding=encoding) as f:
            f.write(text[:3])  # half the file reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text(target, '{"k": 10}')
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["meta.json"]
