"""The Python API, for scripts and notebooks.

>>> import paralab
>>> summary = paralab.run("quickstart_offline", ["trainer.max_epochs=2"])
>>> summary["metrics"]["test/acc"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paralab.platform.progress import show_on_stderr


def compose(experiment: str, overrides: Sequence[str] = ()):
    """The validated config an experiment resolves to (nothing is run or written)."""
    from paralab.platform.config import load

    return load(experiment, list(overrides))


def run(
    experiment: str, overrides: Sequence[str] = (), *, callbacks: list[Any] | None = None
) -> dict[str, Any]:
    """Run one experiment; returns its summary (``metrics``, ``run_dir``, ...).

    ``callbacks`` are extra Lightning callbacks for Lightning-based paradigms.
    """
    from paralab.platform.runner import execute

    show_on_stderr()

    return execute(compose(experiment, overrides), callbacks=callbacks)


def warm(*paradigms: str):
    """Keep the engines of ``paradigms`` (default: every paradigm) up between the runs inside,
    as a sequential suite does: federated runs then share one Ray and its client workers.

    >>> with paralab.warm("federated"):
    ...     for mu in ("0.01", "0.1"):
    ...         fedprox = ["paradigm.strategy=fedprox", f"paradigm.options.proximal_mu={mu}"]
    ...         paralab.run("fashion_mnist_federated", fedprox)
    """
    from paralab.platform.paradigm import warm_engines

    return warm_engines(*paradigms)


def resume(run_dir: str | Path, *, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its last checkpoint; returns its summary."""
    from paralab.platform.runner import resume as resume_run

    show_on_stderr()

    return resume_run(run_dir, callbacks=callbacks)


def bench(
    suite: str,
    overrides: Sequence[str] = (),
    *,
    output_dir: str | None = None,
    only: Sequence[str] | None = None,
    parallel: int | None = None,
    ray_address: str | None = None,
) -> Path:
    """Run a benchmark suite (or its ``only`` runs); returns the folder with
    ``comparison.json`` and the runs. ``parallel``: up to that many runs at once, each its own
    process, on a local Ray or the cluster at ``ray_address`` (which alone means as many as
    fit)."""
    from paralab.benchmarks.suite import run_suite

    show_on_stderr()
    only = list(only) if only else None
    return run_suite(suite, list(overrides), output_dir, only, parallel, ray_address)


def resume_bench(
    bench_dir: str | Path, parallel: int | None = None, ray_address: str | None = None
) -> Path:
    """Finish an interrupted suite folder: completed runs are kept, the others continued (in
    parallel if the suite ran so, or if ``parallel`` / ``ray_address`` say so now)."""
    from paralab.benchmarks.suite import resume_suite

    show_on_stderr()

    return resume_suite(bench_dir, parallel, ray_address)


def probe(run_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Linear and k-NN probes of a run folder's trained backbone on the run's data (or the data
    ``overrides`` name, e.g. ``["data=fashion_mnist"]``); writes ``probe.json`` into the folder
    and returns it (``metrics``: ``probe/linear_acc``, ``probe/knn_acc``, ...)."""
    from paralab.platform.probes.run import probe_folder

    show_on_stderr()

    return probe_folder(run_dir, list(overrides))


def probe_random(experiment: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The same probes of a freshly initialised model of ``experiment``: the untrained
    baseline a trained backbone is compared with. Nothing is written."""
    from paralab.platform.probes.run import probe_random as probe_fresh

    show_on_stderr()

    return probe_fresh(experiment, list(overrides))
