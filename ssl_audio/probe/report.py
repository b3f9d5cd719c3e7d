"""Probe results on disk and on screen: results.json, results.md, a PNG of the metric against the layer
(drawn with Pillow: matplotlib is not a dependency), and a side-by-side table of several runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ssl_audio.atomic import write_text

RESULTS_JSON, RESULTS_MD, LAYERS_PNG = "results.json", "results.md", "layers.png"
PLOT_SIZE = (480, 320)  # pixels
PLOT_MARGINS = (64, 34, 16, 46)  # left, top, right, bottom: room for tick labels and titles
INK, GRID, LINE = (0, 0, 0), (225, 225, 225), (31, 119, 180)
LOWER_IS_BETTER = ("eer", "min_dcf", "cer", "wer")  # every other metric: higher is better


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _metrics_table(results: dict[str, Any]) -> list[str]:
    """metric | value, or with several seeds: metric | mean | std | each seed's value."""
    metrics, std = results["metrics"], results.get("metrics_std")
    if not std:
        return _table(["metric", "value"], [[name, _number(v)] for name, v in metrics.items()])
    per_seed = results["metrics_per_seed"]
    first = results["config"]["seed"]
    header = ["metric", f"mean of {len(per_seed)} seeds", "std", *(f"seed {first + i}" for i in range(len(per_seed)))]
    rows = [
        [name, _number(value), _number(std[name]), *(_number(m[name]) for m in per_seed)]
        for name, value in metrics.items()
    ]
    return _table(header, rows)


def results_markdown(results: dict[str, Any]) -> str:
    """A readable summary: what was probed, the metrics, layer weights and the per-layer table."""
    cfg = results["config"]
    lines = [
        f"# probe {results['task']}: {results['featurizer']} ({results['probe']})",
        "",
        f"train: {results['num_train']} utterances ({cfg['train']}); test: {results['num_test']} utterances "
        f"({cfg['test']}); labels: {results['label_column']}; {results['frame_rate']:g} frames/s",
        "",
        *_metrics_table(results),
    ]
    if results.get("layer_weights"):
        weights = ", ".join(f"{k}: {w:.3f}" for k, w in enumerate(results["layer_weights"]))
        lines += ["", f"layer weights (0 = transformer input): {weights}"]
    if results.get("per_layer"):
        names = list(results["per_layer"][0]["metrics"])
        rows = [[str(p["layer"]), *(_number(p["metrics"][n]) for n in names)] for p in results["per_layer"]]
        lines += ["", "## Every layer on its own", "", *_table(["layer", *names], rows)]
        lines += ["", f"![{results['headline']} against layer]({LAYERS_PNG})"]
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, results: dict[str, Any]) -> list[Path]:
    """results.json, results.md and (with per-layer results) layers.png in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / RESULTS_JSON, out_dir / RESULTS_MD]
    write_text(written[0], json.dumps(results, indent=1) + "\n")
    write_text(written[1], results_markdown(results))
    if results.get("per_layer"):
        metric = results["headline"]
        layers = [p["layer"] for p in results["per_layer"]]
        values = [p["metrics"][metric] for p in results["per_layer"]]
        title = f"{results['task']}: {metric} per layer of {_short(results['featurizer'])}"
        written.append(plot_layers(out_dir / LAYERS_PNG, layers, values, title=title, ylabel=metric))
    return written


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def plot_layers(path: str | Path, layers: list[int], values: list[float], *, title: str, ylabel: str) -> Path:
    """A line plot of `values` against `layers` with axes, ticks, labels and a dot per layer, as PNG."""
    if not layers or len(layers) != len(values):
        raise ValueError(f"plot_layers: {len(layers)} layers for {len(values)} values")
    width, height = PLOT_SIZE
    left, top, right, bottom = PLOT_MARGINS
    x0, x1, y0, y1 = left, width - right, height - bottom, top  # plot area; y grows downwards
    low, high = min(values), max(values)
    if high - low < 1e-9:  # a flat line still needs a y range
        low, high = low - 0.05, high + 0.05
    yticks = _ticks(low, high)
    low, high = yticks[0], yticks[-1]
    span = max(layers[-1] - layers[0], 1)

    def point(layer: int, value: float) -> tuple[float, float]:
        return (x0 + (layer - layers[0]) / span * (x1 - x0), y0 - (value - low) / (high - low) * (y0 - y1))

    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for tick in yticks:
        _, y = point(layers[0], tick)
        draw.line([(x0, y), (x1, y)], fill=GRID)
        label = f"{tick:.3g}"
        draw.text((x0 - 6 - draw.textlength(label, font=font), y - 5), label, fill=INK, font=font)
    every = max(1, math.ceil(len(layers) / 16))  # at most ~16 x labels
    for layer in layers[::every]:
        x, _ = point(layer, low)
        draw.line([(x, y0), (x, y0 + 4)], fill=INK)
        draw.text((x - draw.textlength(str(layer), font=font) / 2, y0 + 6), str(layer), fill=INK, font=font)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill=INK, width=1)  # the axes
    draw.text(((x0 + x1 - draw.textlength("layer", font=font)) / 2, height - 18), "layer", fill=INK, font=font)
    draw.text((4, top - 16), ylabel, fill=INK, font=font)
    draw.text(((width - draw.textlength(title, font=font)) / 2, 4), title, fill=INK, font=font)
    points = [point(k, v) for k, v in zip(layers, values)]
    if len(points) > 1:
        draw.line(points, fill=LINE, width=2)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE, outline=INK)
    path = Path(path)
    image.save(path)
    return path


def load_results(run: str | Path) -> dict[str, Any]:
    """results.json of a run folder (or the file itself)."""
    path = Path(run)
    path = path / RESULTS_JSON if path.is_dir() else path
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no results (run `ssl-audio probe ... --out {Path(run)}` first)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None


def _short(featurizer: str) -> str:
    """mfcc, logmel, run/step_00001000, or random (run/step_00001000)."""
    if featurizer.startswith("random:"):
        return f"random ({_short(featurizer[len('random:') :])})"
    path = Path(featurizer)
    return featurizer if len(path.parts) < 2 else f"{path.parent.name}/{path.name}"


def compare_runs(runs: list[str | Path]) -> str:
    """Markdown table of several runs side by side: a row per task metric, a column per run, the best in bold.

    Runs whose folders share a name (e.g. probes/keywords/mfcc and probes/speakers/mfcc) share a column, so
    one table can hold several tasks per model.
    """
    results = [load_results(run) for run in runs]
    folders = [Path(run) if Path(run).is_dir() else Path(run).parent for run in runs]
    names = [folder.name for folder in folders]
    # rows are named by task, or by the folder above each run where those differ (clean and noisy test sets)
    groups = [folder.parent.name for folder in folders]
    by_group = len(set(groups)) > 1
    columns = list(dict.fromkeys(names))
    merged: dict[str, dict[str, set[str]]] = {c: {"featurizer": set(), "probe": set()} for c in columns}
    values: dict[str, list[float | None]] = {}
    for name, group, r in zip(names, groups, results):
        column = columns.index(name)
        merged[name]["featurizer"].add(_short(r["featurizer"]))
        merged[name]["probe"].add(f"{r['task']}: {r['probe']}")
        row = f"{group}: {r['task']}" if by_group else r["task"]
        for metric, value in r["metrics"].items():
            values.setdefault(f"{row} {metric}", [None] * len(columns))[column] = value
    rows: dict[str, list[str]] = {
        key: [", ".join(sorted(merged[c][key])) for c in columns] for key in ("featurizer", "probe")
    }
    for key, row in values.items():
        present = [v for v in row if v is not None]
        best = (min if key.split()[-1] in LOWER_IS_BETTER else max)(present) if len(present) > 1 else None
        rows[key] = ["-" if v is None else f"**{_number(v)}**" if v == best else _number(v) for v in row]
    return "\n".join(_table(["", *columns], [[key, *cells] for key, cells in rows.items()])) + "\n"
