"""Progress bars (ssl_audio/progress.py) only on a terminal; library log records through the CLI's handler."""

from __future__ import annotations

import io
import logging

import pytest

from ssl_audio import cli
from ssl_audio.data.loader import stderr_line
from ssl_audio.progress import configure_logging, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    assert list(progress(range(3), desc="scanning audio", unit="file")) == [0, 1, 2]
    assert pipe.getvalue() == ""  # not a terminal: quiet
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(progress(iter(range(3)), total=3, desc="scanning audio", unit="file")) == [0, 1, 2]
    assert "scanning audio:   0%|" in terminal.getvalue() and "0/3 [" in terminal.getvalue()


def test_library_records_reach_stderr_as_bare_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logger = logging.getLogger("ssl_audio")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    configure_logging()
    configure_logging()  # idempotent: one handler
    assert len(logger.handlers) == 1
    stderr_line("skipped unusable utterance 3")  # the data loader's report, now a warning record
    logging.getLogger("ssl_audio.train").info("update 2: loss=1")
    logging.getLogger("ssl_audio.cluster.kmeans").debug("k-means run 1 of 1")  # below INFO: not shown
    assert stream.getvalue() == "skipped unusable utterance 3\nupdate 2: loss=1\n"
    monkeypatch.setenv("SSL_AUDIO_LOG_LEVEL", "debug")
    configure_logging()
    logging.getLogger("ssl_audio.cluster.kmeans").debug("k-means run 1 of 1")
    assert stream.getvalue().endswith("k-means run 1 of 1\n")


def test_cli_configures_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    monkeypatch.setattr(cli, "configure_logging", lambda: called.append(True))
    monkeypatch.setattr(cli, "build_parser", lambda: _Parser())
    assert cli.main([]) == 0 and called == [True]


class _Parser:
    def parse_args(self, argv):  # noqa: ANN001, ANN201
        return type("Args", (), {"func": staticmethod(lambda args: 0), "command": "x"})()
