"""Comparison tables: one row per run (name, paradigm, strategy, headline metrics, wall time)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from paralab.benchmarks.suite_file import Comparison, LabelCurve
from paralab.platform.tracking import CONFIG, read_json, summary_of, write_json

#: A run folder's name: ``<run name>-<YYYYMMDD>-<HHMMSS>[-n]``.
RUN_FOLDER = re.compile(r"(.+)-\d{8}-\d{6}(-\d+)?")


def rows_of(summaries: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        metrics = s.get("metrics", {})
        rows.append({
            "name": s.get("run", s["name"]),
            "paradigm": s["paradigm"],
            "strategy": s.get("strategy", "-"),
            "model": s["model"],
            "dataset": s["dataset"],
            **{c: metrics.get(c) for c in columns},
            "published": s.get("published"),
            "wall_time_s": s.get("wall_time_s"),
            "status": s.get("status"),
            "error": s.get("error") if s.get("status") != "completed" else None,
            "run_dir": s.get("run_dir"),
            "node": s.get("node"),  # the Ray node a parallel suite ran it on
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """One row per run; a ``published`` column (the paper's figure for the first column) after
    the metrics when any run has one; a ``status`` column, and why below the table, when a run
    did not complete."""
    published = any(r.get("published") is not None for r in rows)
    unfinished = [r for r in rows if r.get("status") not in (None, "completed")]
    head = ["run", "paradigm", "strategy", "model", "dataset", *columns]
    head += [f"published {columns[0]}"] if published and columns else []
    head += ["wall time (s)"] + (["status"] if unfinished else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["paradigm"], r["strategy"], r["model"], r["dataset"]]
        cells += [_fmt(r.get(c)) for c in columns]
        cells += [_fmt(r.get("published"))] if published and columns else []
        cells.append(_fmt(r.get("wall_time_s"), 1))
        cells += [r.get("status")] if unfinished else []
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = [f"- {r['name']} ({r['status']}): {r.get('error') or 'no reason recorded'}"
             for r in unfinished]  # fmt: skip
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _fmt(value: Any, digits: int = 4) -> str:
    """A cell: "—" for none, counts (rounds, images) as whole numbers, other floats rounded."""
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2:
        return str(int(value))
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_comparison(
    folder: Path, suite: str, compare: Comparison, summaries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write comparison.json, comparison.md and the plots into ``folder``; print the table."""
    from paralab.benchmarks.plots import plot_bars, plot_curves, plot_label_curve

    columns = list(dict.fromkeys([compare.metric, *compare.columns]))
    rows = rows_of(summaries, columns)
    payload = {"suite": suite, "metric": compare.metric, "columns": columns, "rows": rows}
    if compare.published:
        payload["published"] = compare.published
    if compare.label_curve:
        payload["label_curve"] = label_curve(summaries, compare.label_curve, compare.metric)
    write_json(folder / "comparison.json", payload)
    table = markdown_table(rows, columns)
    source = f"Published figures: {compare.published}.\n\n" if compare.published else ""
    (folder / "comparison.md").write_text(f"# {suite}\n\n{source}{table}")
    plot_bars(rows, compare.metric, folder / "accuracy.png")
    if compare.curve:
        plot_curves(rows, compare.curve, compare.curve_x, folder / "curves.png")
    if compare.label_curve:
        plot_label_curve(payload["label_curve"], folder / "label_curve.png")
    collect_run_plots(folder, rows)
    print(table)
    return payload


def label_curve(
    summaries: list[dict[str, Any]], curve: LabelCurve, default_metric: str
) -> dict[str, Any]:
    """The points of ``label_curve.png``: for each value of ``curve.group`` in the runs'
    configs, ``[x, metric]`` pairs sorted by x (a null x is 1: all labels; a run without the
    metric, a failed one, or one not in ``curve.runs`` is left out)."""
    metric = curve.metric or default_metric
    lines: dict[str, list[list[float]]] = {}
    for s in summaries:
        if curve.runs is not None and s.get("run", s.get("name")) not in curve.runs:
            continue
        value = s.get("metrics", {}).get(metric)
        if value is None or not s.get("run_dir"):
            continue
        config = _saved_config(Path(s["run_dir"]))
        x = _at(config, curve.x)
        label = group_label(_at(config, curve.group))
        lines.setdefault(label, []).append([1.0 if x is None else float(x), float(value)])
    for points in lines.values():
        points.sort()
    return {"x": curve.x, "group": curve.group, "metric": metric, "lines": lines}


def group_label(value: Any) -> str:
    """A group's name in the legend: a run folder (or a file in one) by its run's name, null
    as "none", anything else as written."""
    if value is None:
        return "none"
    for part in reversed(Path(str(value)).parts):
        match = RUN_FOLDER.fullmatch(part)
        if match:
            return match.group(1)
    return str(value)


def _saved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    saved = yaml.safe_load(path.read_text()) if path.is_file() else None
    return saved if isinstance(saved, dict) else {}


def _at(config: dict[str, Any], key: str) -> Any:
    """The value at the dotted ``key`` of a plain config (None where absent)."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def collect_run_plots(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Copy the plots a paradigm drew in each run folder (``*.png``) as ``<run>-<plot>.png``."""
    import shutil

    for r in rows:
        for png in sorted(Path(r["run_dir"]).glob("*.png")) if r.get("run_dir") else ():
            shutil.copyfile(png, folder / f"{r['name']}-{png.name}")


def compare_runs(run_dirs: list[str], columns: list[str] | None = None) -> str:
    """A markdown table over existing run folders (``paralab compare``); ``columns`` default to
    the runs' headlines (``test/acc`` for classification, ``test/miou`` for segmentation)."""
    summaries = [summary_of(Path(d)) for d in run_dirs]
    if not columns:
        columns = list(dict.fromkeys(s.get("headline", "test/acc") for s in summaries))
    return markdown_table(rows_of(summaries, columns), columns)


def load_comparison(folder: Path) -> dict[str, Any]:
    return read_json(folder / "comparison.json")
