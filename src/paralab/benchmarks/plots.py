"""Plots for a comparison: the headline metric per run, and training curves from metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    plt = _pyplot()
    names = [r["name"] for r in rows]
    values = [r.get(metric) or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.5))
    bars = ax.bar(names, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylabel(metric)
    ax.set_ylim(0, max(1.0, max(values) * 1.1))
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_curve(run_dir: Path, metric: str, x: str) -> tuple[list[float], list[float]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return [], []
    xs, ys = [], []
    with path.open() as f:
        reader = csv.DictReader(f)
        if x not in (reader.fieldnames or []):
            x = "step"
        for row in reader:
            if row.get(metric) not in (None, "") and row.get(x) not in (None, ""):
                xs.append(float(row[x]) + (1 if x == "epoch" else 0))
                ys.append(float(row[metric]))
    return xs, ys


def plot_curves(rows: list[dict[str, Any]], metric: str, x: str, path: Path) -> None:
    """One line per run with at least two points of ``metric``: a run that logs it once (an
    offline run's final test score beside federated rounds) is in the bar chart, and its
    single point at its own last step would only stretch the x-axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = 0
    for r in rows:
        if not r.get("run_dir"):  # a run that never started
            continue
        xs, ys = read_curve(Path(r["run_dir"]), metric, x)
        if len(xs) > 1:
            ax.plot(xs, ys, marker="o", markersize=3, label=r["name"])
            drawn += 1
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if drawn:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_label_curve(curve: dict[str, Any], path: Path) -> None:
    """The metric against the fraction of labels (log x axis), one line per group: the points
    :func:`paralab.benchmarks.compare.label_curve` gives."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, points in sorted(curve["lines"].items()):
        xs, ys = zip(*points, strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o", markersize=4, label=label)
    ax.set_xscale("log")
    xs = sorted({x for points in curve["lines"].values() for x, _ in points})
    ax.set_xticks(xs, [f"{x:g}" for x in xs])  # the fractions run, as written: 0.01, 0.1, 1
    ax.minorticks_off()
    ax.set_xlabel(f"{curve['x']} (log scale)")
    ax.set_ylabel(curve["metric"])
    if curve["lines"]:
        ax.legend(title=curve["group"], fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
