"""Load a benchmark suite, validate every run up front, run them, and write the comparison.

A suite is ``configs/benchmark/<name>.yaml``::

    description: one line
    overrides: [trainer.max_epochs=5]      # for every run
    runs:
      - {name: offline, experiment: digits_supervised, overrides: [], published: 0.99}
    compare: {metric: test/acc, columns: [test/acc], curve: val/acc, published: "Paper, Table 2"}

A reproduction suite gives each run the paper's figure for the headline metric (``published``)
and its source (``compare.published``); the comparison shows them beside paralab's.

The user's ``key=value`` overrides apply to every run, last, so ``model=vit`` swaps the model
in all of them. An override value ``@<run>`` is the folder of an earlier run of the suite
(``model.init_from=@pretrain``: start from its backbone; see
:mod:`paralab.benchmarks.references`). ``compare.label_curve`` draws the headline against a
config key over runs, one line per value of another key (accuracy against the fraction of
labels, one line per backbone source)::

    compare: {metric: test/acc, label_curve: {x: data.label_fraction, group: model.init_from}}
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paralab.benchmarks.references import (
    Reference,
    check_init_fits,
    check_references,
    deferred,
    resolve,
)
from paralab.errors import ConfigError, RunFolderError
from paralab.platform.config import config_dirs, config_file, group_options, load, validate_section
from paralab.platform.progress import say
from paralab.platform.tracking import CONFIG, SUMMARY, read_json, write_json

STATE = "suite.json"  # the suite name, user overrides and run selection, for --resume


@dataclass
class SuiteRun:
    name: str = "???"
    experiment: str = "???"
    overrides: list[str] = field(default_factory=list)
    published: float | None = None  # the paper's figure for compare.metric


@dataclass
class LabelCurve:
    """``label_curve.png``: ``metric`` (default: the comparison's) against the config key ``x``
    on a log axis (a run with ``x`` null is drawn at 1: all labels), one line per value of the
    config key ``group`` (a run folder shows as its run's name, null as "none"); ``runs``: the
    suite's runs it draws (null: every run that has the metric)."""

    x: str = "data.label_fraction"
    group: str = "model.init_from"
    metric: str | None = None
    runs: list[str] | None = None


@dataclass
class Comparison:
    metric: str = "test/acc"
    columns: list[str] = field(default_factory=lambda: ["test/acc"])
    curve: str | None = "val/acc"
    curve_x: str = "epoch"
    label_curve: LabelCurve | None = None
    published: str | None = None  # where the runs' published figures come from


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
            f"(files in {', '.join(str(d / 'benchmark') for d in config_dirs())})"
        )
    path = config_file("benchmark", name)  # the first config layer that has it
    try:
        raw = yaml.safe_load(path.read_text()) if path else {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = f"{getattr(error, 'problem', None) or 'unreadable'}{where}"
        raise ConfigError(
            f"benchmark {name}: {path} is not valid YAML ({reason}). Fix the file; quote "
            "overrides that hold brackets or commas ('model.channels=[8,16]')"
        ) from None
    suite: Suite = validate_section(f"benchmark {name}", raw, Suite)
    names = [r.name for r in suite.runs]
    if not names:
        raise ConfigError(f"benchmark {name}: lists no runs")
    if len(set(names)) != len(names):
        raise ConfigError(f"benchmark {name}: run names repeat: {names}")
    curve = suite.compare.label_curve
    unknown = [r for r in (curve.runs or []) if r not in names] if curve else []
    if unknown:
        raise ConfigError(
            f"benchmark {name}: compare.label_curve.runs names {', '.join(unknown)}, which the "
            f"suite does not run. Its runs: {', '.join(names)}"
        )
    return suite


def run_suite(
    name: str,
    overrides: list[str] | None = None,
    output_dir: str | None = None,
    only: list[str] | None = None,
) -> Path:
    """Run the suite's runs (or the ``only`` ones); returns the folder with runs and comparison."""
    suite = load_suite(name)
    runs = select_runs(name, suite, only)
    user = list(overrides or [])
    configs, datasets, refs = _prepare_runs(name, suite, runs, user)
    root = Path(output_dir or configs[0].output_dir).expanduser() / "bench"
    folder = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=False)
    state = {"suite": name, "overrides": user, "only": [r.name for r in runs] if only else None}
    write_json(folder / STATE, state)
    return _run_all(folder, name, suite, runs, configs, datasets, refs)


def resume_suite(folder: str | Path) -> Path:
    """Finish a suite folder: keep its completed runs, continue interrupted ones, run the rest.

    The suite file is read again, with the overrides and run selection saved in ``suite.json``.
    """
    folder = Path(folder).expanduser()
    if not (folder / STATE).is_file():
        raise RunFolderError(
            f"--resume {folder}: no {STATE} there. Give a folder made by `paralab bench`"
        )
    state = read_json(folder / STATE)
    for summary in sorted(folder.glob(f"*/{SUMMARY}")):  # a damaged one stops us before any run
        read_json(summary)
    suite = load_suite(state["suite"])
    runs = select_runs(state["suite"], suite, state.get("only"))
    done = [r.name for r in suite.runs if _latest_run_folder(folder, r.name) is not None]
    user = state.get("overrides", [])
    configs, datasets, refs = _prepare_runs(state["suite"], suite, runs, user, done)
    return _run_all(folder, state["suite"], suite, runs, configs, datasets, refs)


def select_runs(name: str, suite: Suite, only: list[str] | None) -> list[SuiteRun]:
    if not only:
        return list(suite.runs)
    names = [r.name for r in suite.runs]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(
            f"benchmark {name} has no run named {', '.join(map(repr, unknown))}. "
            f"Its runs: {', '.join(names)}"
        )
    return [r for r in suite.runs if r.name in only]


def _prepare_runs(
    name: str, suite: Suite, runs: list[SuiteRun], user: list[str], done: list[str] | None = None
):
    """Compose and check every run before anything is written; load each dataset once.
    ``done``: runs whose folders the suite folder holds (on --resume), which ``@run`` may name
    though they are not selected. Returns the configs, the datasets and each run's ``@run``
    references (their keys are null in the configs until the run starts)."""
    from paralab.platform.runner import load_data, prepare

    overrides = {run.name: [*suite.overrides, *run.overrides, *user] for run in runs}
    refs = check_references(name, [r.name for r in suite.runs], overrides, done or ())
    configs = []
    for run in runs:
        config = load(run.experiment, deferred(overrides[run.name]))
        devices = config.trainer.devices
        if (len(devices) if isinstance(devices, list | tuple) else devices) not in (1, "1", "auto"):
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
    _check_fits(name, runs, configs, datasets, refs)
    return configs, datasets, refs


def _check_fits(name: str, runs, configs, datasets, refs: dict[str, list[Reference]]) -> None:
    """``model.init_from=@run`` between two prepared runs: their backbones must match."""
    prepared = {run.name: config for run, config in zip(runs, configs, strict=True)}
    for run, config in prepared.items():
        for ref in refs.get(run, []):
            source = prepared.get(ref.run)  # None: a run done before (resume), read at its start
            if source is not None:
                pair = (source, datasets[repr(source.data)])
                where = f"benchmark {name}, run {run}"
                check_init_fits(where, config, datasets[repr(config.data)], ref, pair)


def _run_all(folder: Path, name: str, suite: Suite, runs, configs, datasets, refs) -> Path:
    from paralab.benchmarks.compare import write_comparison

    try:
        summaries = _run_each(folder, name, runs, configs, datasets, refs)
    except BaseException:  # Ctrl-C, a failed run: the suite folder can be finished later
        say(f"suite stopped; its folder: {folder}; finish it with: paralab bench --resume {folder}")
        raise
    write_comparison(folder, name, suite.compare, summaries)
    return folder


def _run_each(folder: Path, name: str, runs, configs, datasets, refs) -> list[dict[str, Any]]:
    """Each run of the suite in order: completed ones kept, interrupted ones continued; a new
    run's ``@run`` references become the folders of those runs (run before it)."""
    from paralab.platform.config import load_saved
    from paralab.platform.runner import execute

    summaries: list[dict[str, Any]] = []
    for i, (run, config) in enumerate(zip(runs, configs, strict=True), 1):
        label = f"[{i}/{len(configs)}] {name}: {run.name}"
        previous = _latest_run_folder(folder, run.name)
        kept = _summary(previous) if previous is not None else None
        if kept is not None and kept.get("status") == "completed":
            say(f"{label}: completed earlier, kept ({previous.name})")
            summary = kept
        elif previous is not None:
            say(f"{label}: continuing {previous.name}")
            saved = load_saved(previous / CONFIG)
            summary = execute(saved, run_dir=previous, data=datasets.get(repr(saved.data)))
        else:
            say(f"{label} ({config.paradigm.name}, {config.model.name}, {config.data.name})")
            config = resolve(
                config, refs.get(run.name, []), lambda ref: _latest_run_folder(folder, ref)
            )
            config.run.output_dir = str(folder)
            config.run.name = run.name
            config.plain.update(output_dir=str(folder), name=run.name)
            summary = execute(config, data=datasets.get(repr(config.data)))
        summary["run"] = run.name
        if run.published is not None:
            summary["published"] = run.published
        summaries.append(summary)
    return summaries


def _latest_run_folder(folder: Path, run: str) -> Path | None:
    """The newest ``<run>-<timestamp>[-n]`` folder that holds a config, if any."""
    pattern = re.compile(re.escape(run) + r"-\d{8}-\d{6}(-\d+)?")
    found = [p for p in folder.iterdir() if pattern.fullmatch(p.name) and (p / CONFIG).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SUMMARY
    return read_json(path) if path.is_file() else None
