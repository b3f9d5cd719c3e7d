"""Range checks for config dataclasses, written once: each config calls these from its `__post_init__`.

A failed check raises `FieldError` (a ValueError) that names the field, the allowed range and the value;
the config loader prefixes the dotted path, e.g. `config key 'train.save_every': must be an integer >= 1, got 0`.
A field holding a tuple is checked item by item (`betas[1]`, `conv_layers[0][2]`); None (an unset optional
field) passes every check.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any


class FieldError(ValueError):
    """A config field outside its allowed range. `field` is relative to the config that raised it."""

    def __init__(self, config: object, field: str, reason: str) -> None:
        super().__init__(f"{type(config).__name__}.{field}: {reason}")
        self.field, self.reason = field, reason


def fail(config: object, field: str, reason: str) -> None:
    """Raise a FieldError for a rule the helpers below do not cover (e.g. one that relates two fields)."""
    raise FieldError(config, field, reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check(config: object, names: tuple[str, ...], ok: Callable[[Any], bool], rule: str) -> None:
    def visit(value: Any, name: str) -> None:
        if value is None:
            return
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                visit(item, f"{name}[{i}]")
        elif not ok(value):
            raise FieldError(config, name, f"must be {rule}, got {value!r}")

    for name in names:
        visit(getattr(config, name), name)


def require_count(config: object, *names: str, minimum: int = 1) -> None:
    """Integers >= `minimum` (sizes, layer counts, intervals in updates)."""
    _check(config, names, lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}")


def require_range(
    config: object, *names: str, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> None:
    """Numbers in [low, high], with either end open: probabilities [0, 1], Adam betas [0, 1)."""

    def ok(v: Any) -> bool:
        if not _is_real(v) or math.isnan(v):
            return False
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    _check(config, names, ok, rule)


def require_probability(config: object, *names: str) -> None:
    """Probabilities and fractions: in [0, 1]."""
    require_range(config, *names, low=0, high=1)


def require_positive(config: object, *names: str) -> None:
    """Finite and > 0 (learning rates, temperatures, durations)."""
    _check(config, names, lambda v: _is_real(v) and math.isfinite(v) and v > 0, "finite and > 0")


def require_non_negative(config: object, *names: str) -> None:
    """Finite and >= 0 (weights of loss terms, weight decay, clipping norms where 0 disables)."""
    _check(config, names, lambda v: _is_real(v) and math.isfinite(v) and v >= 0, "finite and >= 0")


def require_finite(config: object, *names: str) -> None:
    """Any finite number (levels in dB or LUFS)."""
    _check(config, names, lambda v: _is_real(v) and math.isfinite(v), "a finite number")
