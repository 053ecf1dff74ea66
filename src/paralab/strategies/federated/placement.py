"""A federated run's resources reserved as a whole on a Ray cluster: one placement group.

Why: on a cluster shared by a parallel suite's runs, a federated run that asked Ray for its own
process first and for its clients later could start its server and wait for clients that other
runs hold (half-started: rounds that time out, resources held for nothing). A parallel suite on
a cluster (:mod:`paralab.benchmarks.placement`) therefore reserves, before the run's process
starts, one placement group: bundle 0 for the run's own process, one bundle per client that runs
at once (``paradigm.client_resources`` each). Ray grants the group all at once or not yet, so
the run starts whole or waits. The run finds the group by name (``$PARALAB_PLACEMENT_GROUP``, in
Ray namespace ``paralab``) and places one client actor in each bundle after the first.

A user who reserves a group on a cluster by hand can do the same: name it, create it in
namespace ``paralab`` with the run's own bundle first, and set ``PARALAB_PLACEMENT_GROUP``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from paralab.errors import ConfigError

ENV = "PARALAB_PLACEMENT_GROUP"
RUN_BUNDLE = 0  # the run's own process; clients take the bundles after it


def placement_name() -> str | None:
    """The placement group this run was started in (by a parallel suite), or None."""
    return os.environ.get(ENV) or None


def clients_at_once(cfg) -> int:
    """How many clients a round asks for at most (training or evaluation), hence how many
    bundles the run reserves for them: all of a round's clients run at once."""
    from paralab.strategies.federated.strategies import sampled_per_round

    evaluate = 0
    if cfg.fraction_evaluate > 0:
        evaluate = max(int(cfg.num_clients * cfg.fraction_evaluate), cfg.min_evaluate_clients)
    return max(1, min(cfg.num_clients, max(sampled_per_round(cfg), evaluate)))


def client_bundle(cfg) -> dict[str, float]:
    """One client's Ray bundle (``paradigm.client_resources``; zero amounts left out)."""
    res = cfg.client_resources
    return {k: v for k, v in (("CPU", res.num_cpus), ("GPU", res.num_gpus)) if v}


def reserve(name: str, run_bundle: dict[str, float], clients: list[dict[str, float]]) -> Any:
    """Ask Ray for the run's placement group (PACK: one node if it fits, else spread). Ray grants
    it whole when the resources are free; a task placed in it waits until then."""
    from ray.util.placement_group import placement_group

    bundles = [{k: v for k, v in run_bundle.items() if v}, *clients]
    return placement_group(bundles, strategy="PACK", name=name)


def client_slots(name: str, cfg) -> tuple[Any, list[int]]:
    """The group ``name`` and the bundles after the first that fit one client; a group that is
    missing or has no such bundle is an input error naming the way out."""
    from ray.util import get_placement_group

    try:
        group = get_placement_group(name)
    except ValueError:
        raise ConfigError(
            f"${ENV}={name!r}: no Ray placement group of that name in namespace 'paralab' on "
            "the cluster. Unset it (clients then take what the cluster has free), or create "
            "the group first (bundle 0 for the run, one bundle per client)"
        ) from None
    if not group.wait(timeout_seconds=cfg.round_timeout_s):
        raise ConfigError(
            f"${ENV}={name!r}: Ray did not grant the group in paradigm.round_timeout_s="
            f"{cfg.round_timeout_s:g} s. Free the cluster's resources or reserve less"
        )
    need = client_bundle(cfg)
    slots = [
        i
        for i, bundle in enumerate(group.bundle_specs)
        if i != RUN_BUNDLE and all(bundle.get(k, 0) >= v for k, v in need.items())
    ]
    if not slots:
        raise ConfigError(
            f"${ENV}={name!r}: no bundle after the first fits one client "
            f"({_fmt(need)}, paradigm.client_resources). Reserve client bundles of that size"
        )
    return group, slots


def check_total(name: str, bundles: list[dict[str, float]]) -> None:
    """A group that the cluster could never grant (more than its total, or a bundle larger than
    every node) would wait forever: an input error before the suite starts."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total = {k: sum(n.get(k, 0) for n in nodes) for b in bundles for k in b}
    need = {k: sum(b.get(k, 0) for b in bundles) for k in total}
    short = {k: v for k, v in need.items() if v > total[k] + 1e-9}
    too_big = [b for b in bundles if not any(all(n.get(k, 0) >= v for k, v in b.items())
                                             for n in nodes)]  # fmt: skip
    if short or too_big:
        raise ConfigError(
            f"run {name} reserves its own process and {len(bundles) - 1} clients at once "
            f"({_fmt(need)} in all), which this Ray cluster cannot give (total: {_fmt(total)}). "
            "Sample fewer clients per round (paradigm.fraction_train, min_train_clients, "
            "fraction_evaluate), lower paradigm.client_resources, or add nodes"
        )


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{math.ceil(v * 100) / 100:g} {k}" for k, v in resources.items())
