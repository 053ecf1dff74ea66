"""CI: check a suite folder written by `paralab bench` (the folder `make quickstart` prints last).

Usage: python .ci/check_suite.py <suite folder>

Passes when the folder holds comparison.md and comparison.json, every run the suite defines has a
row, every run's summary.json says ``completed``, and every run tracked with wandb offline (the
default) left a non-empty offline wandb run in its folder. Exit 0 or 1 with what is wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def problems(folder: Path) -> list[str]:
    """Everything that keeps ``folder`` from being a complete suite, in words."""
    from paralab.benchmarks.suite import load_suite, select_runs

    found = [f"{folder}: no {name}" for name in ("suite.json", "comparison.md", "comparison.json")
             if not (folder / name).is_file()]  # fmt: skip
    if found:
        return found
    state = json.loads((folder / "suite.json").read_text())
    suite = load_suite(state["suite"])
    expected = [run.name for run in select_runs(state["suite"], suite, state.get("only"))]
    rows = json.loads((folder / "comparison.json").read_text())["rows"]
    if [row["name"] for row in rows] != expected:
        found.append(f"comparison rows {[row['name'] for row in rows]}, suite runs {expected}")
    for row in rows:
        found += _run_problems(row["name"], Path(row["run_dir"]))
    return found


def _run_problems(name: str, run_dir: Path) -> list[str]:
    import yaml

    if not (run_dir / "summary.json").is_file():
        return [f"{name}: no summary.json in {run_dir}"]
    status = json.loads((run_dir / "summary.json").read_text()).get("status")
    found = [] if status == "completed" else [f"{name}: status {status!r} in {run_dir}"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if config["tracking"]["wandb"] == "offline":
        records = [p for p in (run_dir / "wandb").glob("offline-run-*/*.wandb") if p.stat().st_size]
        if not records:
            found.append(f"{name}: tracked offline but no wandb/offline-run-*/*.wandb in {run_dir}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[0])
    found = problems(folder) if folder.is_dir() else [f"{folder} is not a folder"]
    for problem in found:
        print(f"check_suite: {problem}", file=sys.stderr)
    if not found:
        print(f"check_suite: {folder}: every run completed, comparison.md written")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
