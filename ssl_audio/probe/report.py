"""Probe results on disk and on screen: results.json, results.md, a PNG of the metric against the layer
(ssl_audio.probe.layer_plot), and a side-by-side table of several runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssl_audio.atomic import write_text
from ssl_audio.probe.layer_plot import plot_curves, run_curve

RESULTS_JSON, RESULTS_MD, LAYERS_PNG = "results.json", "results.md", "layers.png"
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


def _snr_table(by_snr: list[dict[str, Any]]) -> list[str]:
    """bucket | test rows | each metric (mean, with the std over seeds when there are several)."""
    names = list(dict.fromkeys(name for entry in by_snr for name in entry["metrics"]))  # a bucket may lack one

    def cell(entry: dict[str, Any], name: str) -> str:
        if name not in entry["metrics"]:
            return "-"
        std = entry.get("metrics_std", {}).get(name)
        return _number(entry["metrics"][name]) + ("" if std is None else f" ± {_number(std)}")

    rows = [[e["bucket"], str(e["num_test"]), *(cell(e, n) for n in names)] for e in by_snr]
    return _table(["bucket", "test rows", *names], rows)


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
    if results.get("by_snr"):
        lines += ["", "## By SNR bucket of the test set", "", *_snr_table(results["by_snr"])]
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


def plot_layers(path: str | Path, layers: list[int], values: list[float], *, title: str, ylabel: str) -> Path:
    """A line plot of `values` against `layers` with axes, ticks, labels and a dot per layer, as PNG."""
    if not layers or len(layers) != len(values):
        raise ValueError(f"plot_layers: {len(layers)} layers for {len(values)} values")
    return plot_curves(path, {"": (layers, values)}, title=title, ylabel=ylabel)


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
        for entry in r.get("by_snr", ()):  # per-SNR rows of runs with --by-snr
            for metric, value in entry["metrics"].items():
                values.setdefault(f"{row} @{entry['bucket']} {metric}", [None] * len(columns))[column] = value
    rows: dict[str, list[str]] = {
        key: [", ".join(sorted(merged[c][key])) for c in columns] for key in ("featurizer", "probe")
    }
    for key, row in values.items():
        present = [v for v in row if v is not None]
        best = (min if key.split()[-1] in LOWER_IS_BETTER else max)(present) if len(present) > 1 else None
        rows[key] = ["-" if v is None else f"**{_number(v)}**" if v == best else _number(v) for v in row]
    return "\n".join(_table(["", *columns], [[key, *cells] for key, cells in rows.items()])) + "\n"


def layer_figure(runs: list[str | Path], out: str | Path, *, metric: str | None = None) -> Path:
    """One PNG of several --all-layers runs' metric against the layer, a curve per run named by its folder (or
    its parent/folder when two runs' folders share a name). Default metric: the first run's headline."""
    if not runs:
        raise ValueError("layer_figure: no runs")
    results = [load_results(run) for run in runs]
    folders = [Path(run) if Path(run).is_dir() else Path(run).parent for run in runs]
    names = [folder.name for folder in folders]
    if len(set(names)) < len(names):
        names = [f"{folder.parent.name}/{folder.name}" for folder in folders]
    metric = metric or results[0]["headline"]
    curves = {}
    for name, run, r in zip(names, runs, results):
        try:
            curves[name] = run_curve(r, metric)[1]
        except ValueError as err:
            raise ValueError(f"{run}: {err}") from None
    tasks = ", ".join(dict.fromkeys(r["task"] for r in results))
    return plot_curves(out, curves, title=f"{tasks}: {metric} per layer", ylabel=metric)
