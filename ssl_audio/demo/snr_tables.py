"""Condition tables for the noise protocols of the probes: a labelled tsv's clean rows plus a noisy copy of every
row at each of a few exact SNRs (default 0, 5, 10 and 20 dB), in one table with an `snr_db` column (`inf` on
the clean rows).

    make_condition_table("data/demo/keywords_test.tsv", "data/demo/snr", seed=1)
        # -> data/demo/snr/keywords_test_snr.tsv: clean + 0/5/10/20 dB, scored per bucket (probe --by-snr)
    make_condition_table("data/demo/keywords_train.tsv", "data/demo/snr", seed=2)
        # -> data/demo/snr/keywords_train_snr.tsv: multi-condition head training (Aurora-2's clean + 4 SNRs)

The copy at SNR s lives under `<out_dir>/snr<s>/` (ssl_audio.demo.noisy.make_noisy_copy with the range (s, s)):
every row's noise is drawn from (seed, its path), so the copies of one row at different SNRs hold the same noise
at different levels, and test and training tables built with different seeds never share a noise signal.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ssl_audio.atomic import write_text
from ssl_audio.data.probe_table import PATH_COLUMN, read_table
from ssl_audio.demo.noisy import SNR_COLUMN, make_noisy_copy

CONDITION_SNRS = (0.0, 5.0, 10.0, 20.0)  # dB: issue #17's buckets
CLEAN_SNR = "inf"  # the snr_db of a row without added noise


def condition_dir(out_dir: Path, snr_db: float) -> Path:
    return out_dir / f"snr{snr_db:g}"


def make_condition_table(
    tsv: str | Path,
    out_dir: str | Path,
    snrs: Sequence[float] = CONDITION_SNRS,
    seed: int = 0,
    *,
    clean: bool = True,
) -> Path:
    """`<out_dir>/<tsv stem>_snr.tsv`: the clean rows (unless `clean` is False) then one noisy copy per SNR.

    Columns: the source's, with `snr_db` after `path`; paths relative to `out_dir`. Returns the table's path."""
    if not snrs:
        raise ValueError("make_condition_table: give at least one SNR")
    bad = [s for s in snrs if not math.isfinite(s)]
    if bad or len(set(snrs)) != len(snrs):
        raise ValueError(f"make_condition_table: SNRs must be distinct finite dB values, got {list(snrs)}")
    table = read_table(tsv)
    if SNR_COLUMN in table.columns:
        raise ValueError(f"{table.source}:1: already has a {SNR_COLUMN!r} column; start from the clean table")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = table.source.stem
    path_column = table.columns.index(PATH_COLUMN)
    lines = []
    if clean:
        for i, row in enumerate(table.cells):
            cells = list(row)
            cells[path_column] = Path(os.path.relpath(table.audio_path(i), out_dir)).as_posix()
            cells.insert(path_column + 1, CLEAN_SNR)
            lines.append("\t".join(cells))
    for snr in snrs:
        folder = condition_dir(out_dir, float(snr))
        copy = make_noisy_copy(table.source, folder, (float(snr), float(snr)), seed, table_out=folder / f"{stem}.tsv")
        noisy = read_table(copy)
        for i, row in enumerate(noisy.cells):
            cells = list(row)
            cells[path_column] = Path(os.path.relpath(noisy.audio_path(i), out_dir)).as_posix()
            lines.append("\t".join(cells))
    columns = list(table.columns)
    columns.insert(path_column + 1, SNR_COLUMN)
    out = out_dir / f"{stem}_snr.tsv"
    write_text(out, "\t".join(columns) + "\n" + "\n".join(lines) + "\n")
    return out
