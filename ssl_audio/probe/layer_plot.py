"""Metric-against-layer line plots as PNG, drawn with Pillow (matplotlib is not a dependency): one curve per run,
so several checkpoints (families, rounds, random init) can share one figure and the layer where speaker, phone or
noise information is lost shows as where the curves part. `ssl-audio probe-layers RUN ...` draws it from the
per-layer results of `ssl-audio probe ... --all-layers` runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

PLOT_SIZE = (480, 320)  # pixels of a single-curve plot; a legend adds a row per curve below it
PLOT_MARGINS = (64, 34, 16, 46)  # left, top, right, bottom: room for tick labels and titles
LEGEND_ROW = 14  # pixels
INK, GRID = (0, 0, 0), (225, 225, 225)
COLOURS = (  # matplotlib's tab10: the first is the single-curve colour
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip

Curve = tuple[list[int], list[float]]  # layers, values


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def plot_curves(path: str | Path, curves: dict[str, Curve], *, title: str, ylabel: str) -> Path:
    """Lines of values against layers with axes, ticks, labels and a dot per layer; a legend when there are
    several curves (named by the keys) or a named one."""
    if not curves:
        raise ValueError("plot_curves: no curves")
    for name, (layers, values) in curves.items():
        if not layers or len(layers) != len(values):
            raise ValueError(f"plot_curves: curve {name!r} has {len(layers)} layers for {len(values)} values")
    legend = len(curves) > 1 or any(curves)
    width, height = PLOT_SIZE[0], PLOT_SIZE[1] + (LEGEND_ROW * len(curves) + 6 if legend else 0)
    left, top, right, bottom = PLOT_MARGINS
    x0, x1, y0, y1 = left, width - right, PLOT_SIZE[1] - bottom, top  # plot area; y grows downwards
    every_value = [v for _, values in curves.values() for v in values]
    every_layer = sorted({k for layers, _ in curves.values() for k in layers})
    low, high = min(every_value), max(every_value)
    if high - low < 1e-9:  # a flat line still needs a y range
        low, high = low - 0.05, high + 0.05
    yticks = ticks(low, high)
    low, high = yticks[0], yticks[-1]
    first, span = every_layer[0], max(every_layer[-1] - every_layer[0], 1)

    def point(layer: int, value: float) -> tuple[float, float]:
        return (x0 + (layer - first) / span * (x1 - x0), y0 - (value - low) / (high - low) * (y0 - y1))

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for tick in yticks:
        _, y = point(first, tick)
        draw.line([(x0, y), (x1, y)], fill=GRID)
        label = f"{tick:.3g}"
        draw.text((x0 - 6 - draw.textlength(label, font=font), y - 5), label, fill=INK, font=font)
    step = max(1, math.ceil(len(every_layer) / 16))  # at most ~16 x labels
    for layer in every_layer[::step]:
        x, _ = point(layer, low)
        draw.line([(x, y0), (x, y0 + 4)], fill=INK)
        draw.text((x - draw.textlength(str(layer), font=font) / 2, y0 + 6), str(layer), fill=INK, font=font)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill=INK, width=1)  # the axes
    draw.text(((x0 + x1 - draw.textlength("layer", font=font)) / 2, y0 + 22), "layer", fill=INK, font=font)
    draw.text((4, top - 16), ylabel, fill=INK, font=font)
    draw.text(((width - draw.textlength(title, font=font)) / 2, 4), title, fill=INK, font=font)
    for c, (name, (layers, values)) in enumerate(curves.items()):
        colour = COLOURS[c % len(COLOURS)]
        points = [point(k, v) for k, v in zip(layers, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline=INK)
        if legend:
            y = PLOT_SIZE[1] + c * LEGEND_ROW
            draw.line([(x0, y + 6), (x0 + 20, y + 6)], fill=colour, width=3)
            draw.text((x0 + 26, y), name, fill=INK, font=font)
    path = Path(path)
    image.save(path)
    return path


def run_curve(results: dict[str, Any], metric: str | None = None) -> tuple[str, Curve]:
    """(metric, (layers, values)) of one run's results.json with per-layer results (default: the headline)."""
    per_layer = results.get("per_layer")
    if not per_layer:
        raise ValueError(f"{results['featurizer']}: no per-layer results (probe it with --all-layers)")
    metric = metric or results["headline"]
    if metric not in per_layer[0]["metrics"]:
        raise ValueError(
            f"{results['featurizer']}: no metric {metric!r} per layer ({', '.join(per_layer[0]['metrics'])})"
        )
    return metric, ([p["layer"] for p in per_layer], [p["metrics"][metric] for p in per_layer])
