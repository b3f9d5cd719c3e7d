"""Label checks the utterance-level tasks share: every label present, and test labels inside the training classes."""

from __future__ import annotations

from ssl_audio.data.probe_table import ProbeTable


def class_index(table: ProbeTable, column: str, classes: tuple[str, ...], *, what: str = "class") -> list[int]:
    """Index of each row's label in `classes`; a label outside them raises, naming the line and the label."""
    index = {name: i for i, name in enumerate(classes)}
    codes = []
    for i, label in enumerate(table.column(column)):
        if label not in index:
            raise ValueError(f"{table.where(i)}: {what} {label!r} (column {column!r}) never occurs in the training set")
        codes.append(index[label])
    return codes


def non_empty(table: ProbeTable, column: str) -> list[str]:
    """The column's values; an empty (or blank) one raises, naming its line."""
    values = table.column(column)
    for i, value in enumerate(values):
        if not value.strip():
            raise ValueError(f"{table.where(i)}: empty {column!r}")
    return values


def training_classes(table: ProbeTable, column: str) -> tuple[str, ...]:
    """The sorted distinct labels of the training table."""
    return tuple(sorted(set(non_empty(table, column))))
