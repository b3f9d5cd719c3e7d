"""SNR buckets of a probe test set: which condition each test row is in, and the test set split by condition.

A table with an `snr_db` column (ssl_audio.demo.noisy writes it; `inf` or `clean` marks a clean row) is split
into the buckets `clean`, `0dB`, `5dB`, `10dB`, `20dB`: a noisy row goes to the nearest bucket SNR (a tie to
the lower, harder one). A row further out than half the gap to the next bucket (below -2.5 dB or above 25 dB
with the default buckets) has no bucket and raises: it would be reported under a condition it is not in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ssl_audio.data.probe_table import SNR_COLUMN, ProbeTable
from ssl_audio.probe.task import Targets

SNR_BUCKETS = (0.0, 5.0, 10.0, 20.0)  # dB: issue #17's buckets
CLEAN = "clean"
CLEAN_VALUES = ("inf", "clean")  # how a table marks a row without added noise


def bucket_name(snr_db: float) -> str:
    return CLEAN if math.isinf(snr_db) else f"{snr_db:g}dB"


def bucket_names(buckets: Sequence[float] = SNR_BUCKETS) -> tuple[str, ...]:
    """Report order: clean first, then from the highest SNR to the lowest (easy to hard)."""
    return (CLEAN, *(bucket_name(b) for b in sorted(buckets, reverse=True)))


def snr_bucket(snr_db: float, buckets: Sequence[float] = SNR_BUCKETS) -> str:
    """The bucket of one SNR: `clean` for +inf, else the nearest bucket SNR (ties: the lower one)."""
    if math.isnan(snr_db) or snr_db == -math.inf:
        raise ValueError(f"SNR {snr_db} dB has no bucket")
    if snr_db == math.inf:
        return CLEAN
    ordered = sorted(buckets)
    if len(ordered) < 2:
        raise ValueError(f"need at least 2 bucket SNRs, got {list(buckets)}")
    low = ordered[0] - (ordered[1] - ordered[0]) / 2
    high = ordered[-1] + (ordered[-1] - ordered[-2]) / 2
    if not low <= snr_db <= high:
        raise ValueError(f"SNR {snr_db:g} dB lies outside the buckets {ordered} (accepted: {low:g} to {high:g} dB)")
    best = min(ordered, key=lambda b: (abs(snr_db - b), b))  # the lower bucket wins a tie
    return bucket_name(best)


def table_snrs(table: ProbeTable) -> list[float]:
    """The `snr_db` column as floats (+inf for clean rows); a bad cell raises, naming its line."""
    values = []
    for i, cell in enumerate(table.column(SNR_COLUMN)):
        text = cell.strip().lower()
        try:
            value = math.inf if text in CLEAN_VALUES else float(text)
        except ValueError:
            raise ValueError(
                f"{table.where(i)}: {SNR_COLUMN} {cell!r} is not a number of dB (or inf / clean)"
            ) from None
        if math.isnan(value) or value == -math.inf:
            raise ValueError(f"{table.where(i)}: {SNR_COLUMN} {cell!r} is not a usable SNR")
        values.append(value)
    return values


def bucket_rows(table: ProbeTable, buckets: Sequence[float] = SNR_BUCKETS) -> dict[str, list[int]]:
    """Bucket name -> the test rows in it, in report order; empty buckets are left out."""
    rows: dict[str, list[int]] = {name: [] for name in bucket_names(buckets)}
    for i, snr in enumerate(table_snrs(table)):
        try:
            rows[snr_bucket(snr, buckets)].append(i)
        except ValueError as err:
            raise ValueError(f"{table.where(i)}: {err}") from None
    return {name: found for name, found in rows.items() if found}


def subset_targets(targets: Targets, rows: Sequence[int]) -> Targets:
    """The targets of some test rows (training targets untouched). A trial list names rows of the whole test set,
    so it cannot be subset: the driver refuses trials with a per-bucket report."""
    if targets.trials is not None:
        raise ValueError("a per-SNR report draws its trials per bucket; it cannot use a trial list (--trials)")
    return dataclasses.replace(
        targets,
        test=[targets.test[i] for i in rows] if targets.test else [],
        test_labels=[targets.test_labels[i] for i in rows] if targets.test_labels else [],
    )
