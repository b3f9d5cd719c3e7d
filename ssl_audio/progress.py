"""Progress bars for long, otherwise silent work, and the logging set-up of the command line.

Bars are tqdm's on stderr, and quiet when stderr is not a terminal (a log file or a test does not fill with bar
redraws). Library code logs through `logging.getLogger(__name__)` and never prints; the CLI calls
`configure_logging`, whose handler writes through tqdm so that a log line does not tear a bar.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "it") -> Iterator[T]:
    """`items`, with a bar on stderr when that is a terminal."""
    return iter(tqdm(items, total=total, desc=desc, unit=unit, disable=None, dynamic_ncols=True, leave=False))


class _TqdmHandler(logging.Handler):
    """Writes records to stderr above any bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's own contract: report, never raise)
            self.handleError(record)


def configure_logging(level: int | str | None = None) -> None:
    """ssl_audio's records at `level` and above to stderr as bare lines (the CLI's set-up; idempotent).

    None: $SSL_AUDIO_LOG_LEVEL, else INFO (DEBUG adds e.g. the inertia of every k-means restart)."""
    level = level or os.environ.get("SSL_AUDIO_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger("ssl_audio")
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
