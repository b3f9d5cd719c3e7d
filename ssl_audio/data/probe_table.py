"""Probe tables: a tsv with a header row of column names, one utterance per line.

A `path` column names the audio file relative to the tsv's folder; the other columns are labels
(the demo corpus: keywords_*.tsv `path speaker keyword`, sentences_*.tsv `path speaker transcript`).
Every bad line is reported as `file:line`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATH_COLUMN = "path"
SNR_COLUMN = "snr_db"
MULTI_LABEL_SEPARATOR = ";"  # a label cell naming several classes (multi-label: "chirp;speech")


@dataclass(frozen=True, kw_only=True)
class ProbeTable:
    """Rows of a probe tsv: `cells[i][c]` is column `columns[c]` of the row on line `lines[i]`."""

    source: Path  # the tsv file
    columns: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]  # 1-based line numbers in `source` (the header is line 1)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def root(self) -> Path:
        return self.source.parent

    @property
    def paths(self) -> list[str]:
        return self.column(PATH_COLUMN)

    def audio_path(self, index: int) -> Path:
        return self.root / self.cells[index][self.columns.index(PATH_COLUMN)]

    def where(self, index: int) -> str:
        """`file:line` of row `index`, for error messages."""
        return f"{self.source}:{self.lines[index]}"

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise ValueError(f"{self.source}: no column {name!r} (columns: {', '.join(self.columns)})")
        c = self.columns.index(name)
        return [row[c] for row in self.cells]


def read_table(path: str | Path, *, check_files: bool = True) -> ProbeTable:
    """Read a probe tsv; a missing `path` column, a short or long line, or (with `check_files`) a missing
    audio file raise ValueError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the tsv ({err.strerror or err})") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}:1: expected a header row of tab-separated column names")
    columns = tuple(lines[0].split("\t"))
    if PATH_COLUMN not in columns:
        raise ValueError(f"{path}:1: the header has no {PATH_COLUMN!r} column (columns: {', '.join(columns)})")
    if len(set(columns)) != len(columns):
        raise ValueError(f"{path}:1: repeated column names in {', '.join(columns)}")
    cells, numbers = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = tuple(line.split("\t"))
        if len(row) != len(columns):
            raise ValueError(f"{path}:{number}: {len(row)} fields, expected {len(columns)} ({', '.join(columns)})")
        cells.append(row)
        numbers.append(number)
    if not cells:
        raise ValueError(f"{path}: no rows below the header")
    table = ProbeTable(source=path, columns=columns, cells=tuple(cells), lines=tuple(numbers))
    if check_files:
        for i in range(len(table)):
            if not table.audio_path(i).is_file():
                raise ValueError(f"{table.where(i)}: audio file {table.audio_path(i)} does not exist")
    return table


def read_trials(path: str | Path, table: ProbeTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A verification trial list in VoxCeleb's format, `label enroll test` per line (label 1: same speaker,
    0: different), with both paths as the test table's `path` column writes them -> (i, j, targets).

    An unknown path, a label other than 0/1 or a short line raises ValueError naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the trial list ({getattr(err, 'strerror', None) or err})") from None
    row_of = {os.path.normpath(p): i for i, p in enumerate(table.paths)}
    enroll, test, targets = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ValueError(f"{path}:{number}: expected `label enroll test`, got {len(fields)} fields")
        label, *pair = fields
        if label not in ("0", "1"):
            raise ValueError(f"{path}:{number}: label {label!r} is not 1 (same speaker) or 0 (different)")
        for name in pair:
            if os.path.normpath(name) not in row_of:
                raise ValueError(f"{path}:{number}: {name!r} is not a row of {table.source}")
        enroll.append(row_of[os.path.normpath(pair[0])])
        test.append(row_of[os.path.normpath(pair[1])])
        targets.append(int(label))
    if not targets:
        raise ValueError(f"{path}: no trials")
    if len(set(targets)) < 2:
        raise ValueError(f"{path}: needs both target (1) and non-target (0) trials for an EER")
    return np.array(enroll), np.array(test), np.array(targets, dtype=np.int64)
