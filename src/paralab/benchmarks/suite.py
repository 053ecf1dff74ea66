"""Load a benchmark suite, validate every run up front, run them, and write the comparison.

A suite is ``configs/benchmark/<name>.yaml``::

    description: one line
    overrides: [trainer.max_epochs=5]      # for every run
    runs:
      - {name: offline, experiment: digits_supervised, overrides: []}
    compare: {metric: test/acc, columns: [test/acc], curve: val/acc}

The user's ``key=value`` overrides apply to every run, last, so ``model=vit`` swaps the model
in all of them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paralab.errors import ConfigError
from paralab.platform.config import config_dir, group_options, load, validate_section


@dataclass
class SuiteRun:
    name: str = "???"
    experiment: str = "???"
    overrides: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    metric: str = "test/acc"
    columns: list[str] = field(default_factory=lambda: ["test/acc"])
    curve: str | None = "val/acc"
    curve_x: str = "epoch"


@dataclass
class Suite:
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    runs: list[SuiteRun] = field(default_factory=list)
    compare: Comparison = field(default_factory=Comparison)


def load_suite(name: str) -> Suite:
    options = group_options("benchmark")
    if name not in options:
        raise ConfigError(
            f"unknown benchmark suite {name!r}. Choose one of: {', '.join(options)} "
            f"(files in {config_dir() / 'benchmark'})"
        )
    raw = yaml.safe_load((config_dir() / "benchmark" / f"{name}.yaml").read_text()) or {}
    suite: Suite = validate_section(f"benchmark {name}", raw, Suite)
    names = [r.name for r in suite.runs]
    if not names:
        raise ConfigError(f"benchmark {name}: lists no runs")
    if len(set(names)) != len(names):
        raise ConfigError(f"benchmark {name}: run names repeat: {names}")
    return suite


def run_suite(name: str, overrides: list[str] | None = None, output_dir: str | None = None) -> Path:
    """Run every run of the suite; returns the folder holding the runs and the comparison."""
    from paralab.benchmarks.compare import write_comparison
    from paralab.platform.runner import execute, load_data, prepare

    suite = load_suite(name)
    user = list(overrides or [])
    configs = []
    for run in suite.runs:
        config = load(run.experiment, [*suite.overrides, *run.overrides, *user])
        if config.trainer.devices not in (1, "1", "auto"):
            raise ConfigError(
                f"benchmark {name}, run {run.name}: trainer.devices>1 is for `paralab run`; "
                "a suite runs its runs one after another in one process"
            )
        configs.append(config)
    datasets: dict[str, Any] = {}  # one load per distinct data config, shared by its runs
    for config in configs:
        key = repr(config.data)
        if key not in datasets:
            datasets[key] = load_data(config)
        prepare(config, datasets[key])
    root = Path(output_dir or configs[0].output_dir).expanduser() / "bench"
    folder = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=False)
    summaries: list[dict[str, Any]] = []
    for i, (run, config) in enumerate(zip(suite.runs, configs, strict=True), 1):
        print(f"[{i}/{len(configs)}] {name}: {run.name} ({config.paradigm.name}, "
              f"{config.model.name}, {config.data.name})", file=sys.stderr, flush=True)  # fmt: skip
        config.run.output_dir = str(folder)
        config.run.name = run.name
        config.plain.update(output_dir=str(folder), name=run.name)
        summary = execute(config, data=datasets[repr(config.data)])
        summary["run"] = run.name
        summaries.append(summary)
    write_comparison(folder, name, suite.compare, summaries)
    return folder
