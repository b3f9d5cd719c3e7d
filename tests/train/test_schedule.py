"""lr_multiplier on hand-computed points: warmup (s + 1) / W, polynomial and linear decay, end ratio, tri_stage."""

from __future__ import annotations

import math

import pytest

from ssl_audio.train.schedule import ScheduleConfig, lr_multiplier

# W = 4 warmup updates of T = 12: decay over the 8 updates after warmup.
POLY = ScheduleConfig(kind="polynomial", warmup_updates=4, power=1.0, end_lr_ratio=0.0)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.25),  # the first update already moves: (0 + 1) / 4
        (1, 0.5),
        (2, 0.75),
        (3, 1.0),  # last warmup update reaches the peak
        (4, 1.0),  # decay starts from the peak: progress 0 / 8
        (6, 0.75),  # 1 - 2/8
        (8, 0.5),  # 1 - 4/8
        (11, 0.125),  # 1 - 7/8: the last update of the run still moves
        (12, 0.0),  # the end
        (20, 0.0),  # past the end: clamped, never negative
    ],
)
def test_polynomial_power_one_is_linear_warmup_then_linear_decay(step: int, expected: float) -> None:
    assert lr_multiplier(step, 12, POLY) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("step", "expected"), [(4, 1.0), (6, 0.5625), (8, 0.25), (10, 0.0625), (12, 0.0)])
def test_polynomial_power_two(step: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="polynomial", warmup_updates=4, power=2.0)
    assert lr_multiplier(step, 12, cfg) == pytest.approx(expected, abs=1e-12)  # (1 - (s - 4) / 8) ** 2


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (4, 1.0), (8, 0.55), (12, 0.1), (100, 0.1)])
def test_end_lr_ratio(step: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="polynomial", warmup_updates=4, end_lr_ratio=0.1)
    assert lr_multiplier(step, 12, cfg) == pytest.approx(expected, abs=1e-12)  # 0.1 + 0.9 * (1 - progress)


def test_linear_ignores_power() -> None:
    cfg = ScheduleConfig(kind="linear", warmup_updates=4, power=3.0, end_lr_ratio=0.2)
    assert lr_multiplier(8, 12, cfg) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_multiplier(2, 12, cfg) == pytest.approx(0.75)


def test_no_warmup_starts_at_the_peak() -> None:
    cfg = ScheduleConfig(kind="polynomial", warmup_updates=0)
    assert [lr_multiplier(s, 4, cfg) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_constant() -> None:
    cfg = ScheduleConfig(kind="constant", warmup_updates=4)
    assert {lr_multiplier(s, 12, cfg) for s in (0, 3, 100)} == {1.0}


def test_base_preset_values() -> None:
    """wav2vec 2.0 BASE: 32k warmup of 400k, linear decay to 0."""
    cfg = ScheduleConfig()
    assert lr_multiplier(0, 400_000, cfg) == pytest.approx(1 / 32_000)
    assert lr_multiplier(15_999, 400_000, cfg) == pytest.approx(0.5)
    assert lr_multiplier(32_000, 400_000, cfg) == 1.0
    assert lr_multiplier(216_000, 400_000, cfg) == pytest.approx(0.5)  # halfway through the 368k of decay


# tri_stage over T = 100: warmup 10 (0.01 -> 1), hold 40, decay 50 (1 -> 0.05, exponentially).
TRI = ScheduleConfig(kind="tri_stage", phase_ratios=(0.1, 0.4, 0.5), init_lr_scale=0.01, final_lr_scale=0.05)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.01),
        (5, 0.01 + 0.99 * 0.5),
        (9, 0.01 + 0.99 * 0.9),
        (10, 1.0),  # hold starts
        (49, 1.0),  # hold ends
        (50, 1.0),  # decay starts at exp(0)
        (75, math.sqrt(0.05)),  # exp(log(0.05) * 0.5)
        (90, 0.05**0.8),
        (100, 0.05),
        (1000, 0.05),  # clamped at the final scale
    ],
)
def test_tri_stage_phases(step: int, expected: float) -> None:
    assert lr_multiplier(step, 100, TRI) == pytest.approx(expected, rel=1e-12)


def test_tri_stage_is_monotone_within_phases() -> None:
    values = [lr_multiplier(s, 100, TRI) for s in range(101)]
    assert all(a < b for a, b in zip(values[:10], values[1:11]))
    assert all(a > b for a, b in zip(values[50:100], values[51:101]))
