"""A self-contained HTML report of a benchmark folder: the table and the plots, inlined."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from paralab.errors import RunFolderError


def write_report(bench_dir: str | Path) -> Path:
    from paralab.benchmarks.compare import load_comparison, markdown_table

    folder = Path(bench_dir).expanduser()
    if not (folder / "comparison.json").is_file():
        raise RunFolderError(
            f"{folder} holds no comparison.json: give a folder made by `paralab bench`"
        )
    comparison = load_comparison(folder)
    lines = markdown_table(comparison["rows"], comparison["columns"]).splitlines()
    table = "\n".join(_html_row(line) for i, line in enumerate(lines) if i != 1)
    images = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{p.stem}</figcaption></figure>"
        for p in sorted(folder.glob("*.png"))
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(comparison['suite'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        "td{padding:4px 10px;border-bottom:1px solid #ddd}"
        "tr:first-child td{font-weight:bold}img{max-width:640px}</style>"
        f"<h1>{html.escape(comparison['suite'])}</h1><table>{table}</table>{images}"
    )
    out = folder / "report.html"
    out.write_text(page)
    return out


def _html_row(markdown_row: str) -> str:
    cells = markdown_row.strip().strip("|").split("|")
    return "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in cells) + "</tr>"
