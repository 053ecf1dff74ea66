"""Run a benchmark suite (:mod:`.suite_file`): validate every run up front, before its folder
exists, run them, and write the comparison.

The user's ``key=value`` overrides apply to every run, last, so ``model=vit`` swaps the model
in all of them. An override value ``@<run>`` is the folder of an earlier run of the suite
(``model.init_from=@pretrain``: start from its backbone; see
:mod:`paralab.benchmarks.references`).

Runs go one after another in this process by default. ``--parallel N`` runs up to N at once,
each a process of its own placed by Ray (:mod:`paralab.benchmarks.placement`), on this machine
or on the cluster at ``--ray-address`` / ``$RAY_ADDRESS``.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paralab.benchmarks.references import (
    Reference,
    check_init_fits,
    check_references,
    deferred,
    resolve,
)
from paralab.benchmarks.suite_file import Suite, SuiteRun, load_suite, select_runs
from paralab.errors import ConfigError, RunFailedError, RunFolderError
from paralab.platform.config import load
from paralab.platform.progress import say
from paralab.platform.tracking import CONFIG, SUMMARY, read_json, write_json

STATE = "suite.json"  # the suite name, user overrides, run selection and placement, for --resume


class SuiteIncompleteError(RunFailedError):
    """Runs of a parallel suite failed, crashed or were skipped; the others completed, and the
    comparison shows every run with its status."""


@dataclass
class Prepared:
    """A suite's selected runs, checked: each run's config and overrides, the datasets (one
    per distinct data config) and each run's ``@run`` references."""

    runs: list[SuiteRun]
    configs: list[Any]
    overrides: dict[str, list[str]]
    datasets: dict[str, Any]
    refs: dict[str, list[Reference]]


def run_suite(
    name: str,
    overrides: list[str] | None = None,
    output_dir: str | None = None,
    only: list[str] | None = None,
    parallel: int | None = None,
    ray_address: str | None = None,
) -> Path:
    """Run the suite's runs (or the ``only`` ones), one after another or ``parallel`` at once
    on Ray (local, or the cluster at ``ray_address`` / ``$RAY_ADDRESS``); returns the folder
    with runs and comparison."""
    suite = load_suite(name)
    runs = select_runs(name, suite, only)
    user = list(overrides or [])
    parallel = parallel or (len(runs) if ray_address else None)  # a cluster: as many as fit
    prepared = _prepare_runs(name, suite, runs, user, parallel=parallel)
    root = Path(output_dir or prepared.configs[0].output_dir).expanduser() / "bench"
    folder = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    state = {"suite": name, "overrides": user, "only": [r.name for r in runs] if only else None}
    state |= {"parallel": parallel, "ray_address": ray_address}
    return _run_all(folder, name, suite, prepared, state, new=True)


def resume_suite(
    folder: str | Path, parallel: int | None = None, ray_address: str | None = None
) -> Path:
    """Finish a suite folder: keep its completed runs, continue interrupted or failed ones, run
    the rest, as the suite was run (one after another or in parallel) unless ``parallel`` or
    ``ray_address`` say otherwise.

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
    state["ray_address"] = ray_address or state.get("ray_address")
    state["parallel"] = parallel or state.get("parallel") or (
        len(runs) if state["ray_address"] else None)  # fmt: skip
    user = state.get("overrides", [])
    prepared = _prepare_runs(state["suite"], suite, runs, user, done, state["parallel"])
    return _run_all(folder, state["suite"], suite, prepared, state, new=False)


def _prepare_runs(
    name: str,
    suite: Suite,
    runs: list[SuiteRun],
    user: list[str],
    done: list[str] | None = None,
    parallel: int | None = None,
) -> Prepared:
    """Compose and check every run before anything is written; load each dataset once.
    ``done``: runs whose folders the suite folder holds (on --resume), which ``@run`` may name
    though they are not selected. The references' keys are null in the configs until the run
    starts."""
    from paralab.platform.runner import load_data, prepare

    overrides = {run.name: [*suite.overrides, *run.overrides, *user] for run in runs}
    refs = check_references(name, [r.name for r in suite.runs], overrides, done or ())
    configs = []
    for run in runs:
        config = load(run.experiment, deferred(overrides[run.name]))
        devices = config.trainer.devices
        several = (len(devices) if isinstance(devices, list | tuple) else devices) not in (
            1, "1", "auto")  # fmt: skip
        if several and not parallel:
            raise ConfigError(
                f"benchmark {name}, run {run.name}: trainer.devices={devices} needs a process "
                "of its own, and this suite runs its runs one after another in this one. Add "
                "--parallel N (each run its own process, its devices reserved at once)"
            )
        configs.append(config)
    datasets: dict[str, Any] = {}  # one load per distinct data config, shared by its runs
    for config in configs:
        key = repr(config.data)
        if key not in datasets:
            datasets[key] = load_data(config)
        prepare(config, datasets[key])
    _check_fits(name, runs, configs, datasets, refs)
    return Prepared(runs, configs, overrides, datasets, refs)


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


def _run_all(
    folder: Path, name: str, suite: Suite, prepared: Prepared, state: dict, new: bool
) -> Path:
    """Run what is missing (sequentially, or in parallel on a Ray connected before the folder is
    made) and write the comparison. A parallel suite whose runs did not all complete raises
    :class:`SuiteIncompleteError` after the comparison (its failed rows) is written."""
    from paralab.benchmarks.compare import write_comparison

    with contextlib.ExitStack() as stack:
        if state.get("parallel"):
            from paralab.benchmarks.placement import SuitePlacement

            placement = stack.enter_context(
                SuitePlacement(folder, suite, prepared, state["parallel"], state["ray_address"])
            )
        if new:
            folder.mkdir(parents=True, exist_ok=False)
            write_json(folder / STATE, state)
        try:
            if state.get("parallel"):
                summaries = placement.run(_latest_run_folder, _summary)
            else:
                summaries = _run_each(folder, name, prepared)
        except BaseException:  # Ctrl-C, a failed run: the suite folder can be finished later
            hint = f"paralab bench --resume {folder}"
            say(f"suite stopped; its folder: {folder}; finish it with: {hint}")
            raise
    for run, summary in zip(prepared.runs, summaries, strict=True):
        summary["run"] = run.name
        if run.published is not None:
            summary["published"] = run.published
    write_comparison(folder, name, suite.compare, summaries)
    missing = [s["run"] for s in summaries if s.get("status") != "completed"]
    if missing:
        raise SuiteIncompleteError(
            f"{len(missing)} of {len(summaries)} runs did not complete ({', '.join(missing)}); "
            f"{folder / 'comparison.md'} says why and {folder / 'logs'} holds their output. "
            f"Finish them with: paralab bench --resume {folder}"
        )
    return folder


def _run_each(folder: Path, name: str, prepared: Prepared) -> list[dict[str, Any]]:
    """Each run of the suite in order in this process. An engine that a paradigm starts per run
    (the federated one: Ray and its client workers) stays up between the suite's runs."""
    from paralab.platform.paradigm import warm_engines

    with warm_engines(*dict.fromkeys(c.paradigm.name for c in prepared.configs)):
        runs = zip(prepared.runs, prepared.configs, strict=True)
        return [_run_one(folder, name, prepared, i, *pair) for i, pair in enumerate(runs, 1)]


def _run_one(
    folder: Path, name: str, prepared: Prepared, i: int, run: SuiteRun, config
) -> dict[str, Any]:
    """One run of a sequential suite: kept if completed, continued if interrupted, else new,
    its ``@run`` references made the folders of those runs (run before it)."""
    from paralab.platform.config import load_saved
    from paralab.platform.runner import execute

    datasets = prepared.datasets
    label = f"[{i}/{len(prepared.configs)}] {name}: {run.name}"
    previous = _latest_run_folder(folder, run.name)
    kept = _summary(previous) if previous is not None else None
    if kept is not None and kept.get("status") == "completed":
        say(f"{label}: completed earlier, kept ({previous.name})")
        return kept
    if previous is not None:
        say(f"{label}: continuing {previous.name}")
        saved = load_saved(previous / CONFIG)
        return execute(saved, run_dir=previous, data=datasets.get(repr(saved.data)))
    say(f"{label} ({config.paradigm.name}, {config.model.name}, {config.data.name})")
    refs = prepared.refs.get(run.name, [])
    config = resolve(config, refs, lambda ref: _latest_run_folder(folder, ref))
    config.run.output_dir = str(folder)
    config.run.name = run.name
    config.plain.update(output_dir=str(folder), name=run.name)
    return execute(config, data=datasets.get(repr(config.data)))


def _latest_run_folder(folder: Path, run: str) -> Path | None:
    """The newest ``<run>-<timestamp>[-n]`` folder that holds a config, if any."""
    pattern = re.compile(re.escape(run) + r"-\d{8}-\d{6}(-\d+)?")
    found = [p for p in folder.iterdir() if pattern.fullmatch(p.name) and (p / CONFIG).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SUMMARY
    return read_json(path) if path.is_file() else None
