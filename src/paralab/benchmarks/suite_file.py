"""A benchmark suite's file, ``configs/benchmark/<name>.yaml``, read and checked::

    description: one line
    overrides: [trainer.max_epochs=5]      # for every run
    runs:
      - {name: offline, experiment: digits_supervised, overrides: [], published: 0.99}
    compare: {metric: test/acc, columns: [test/acc], curve: val/acc, published: "Paper, Table 2"}
    resources: {num_cpus: null, num_gpus: null, memory_gb: null}   # per run, --parallel only

A reproduction suite gives each run the paper's figure for the headline metric (``published``)
and its source (``compare.published``); the comparison shows them beside paralab's.
``compare.label_curve`` draws the headline against a config key over runs, one line per value of
another key (accuracy against the fraction of labels, one line per backbone source)::

    compare: {metric: test/acc, label_curve: {x: data.label_fraction, group: model.init_from}}

``resources`` (suite-wide, or in a run's entry) is what each run holds while it runs in a
parallel suite (:mod:`paralab.benchmarks.placement`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from paralab.errors import ConfigError
from paralab.platform.config import config_dirs, config_file, group_options, validate_section
from paralab.platform.schema import bounded


@dataclass
class Resources:
    """What one run of a parallel suite holds while it runs (Ray resources); null: the default.

    CPUs: this machine's cores divided among the ``--parallel`` runs, or 1 on a cluster (a DDP
    run on CPUs: at least one per process). GPUs: ``trainer.devices`` when
    ``trainer.accelerator`` is gpu or cuda, else 0. Memory: no reservation. A run's torch
    threads follow its CPUs, and a federated run's own local Ray gets exactly them.
    """

    num_cpus: float | None = bounded(None, gt=0)
    num_gpus: float | None = bounded(None, ge=0)
    memory_gb: float | None = bounded(None, gt=0)


@dataclass
class SuiteRun:
    name: str = "???"
    experiment: str = "???"
    overrides: list[str] = field(default_factory=list)
    published: float | None = None  # the paper's figure for compare.metric
    resources: Resources | None = None  # this run's, over the suite's


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
    resources: Resources = field(default_factory=Resources)


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
