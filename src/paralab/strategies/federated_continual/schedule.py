"""Which images a client holds in which round: the stream, its partitions, each client's order.

Why everything is recomputed from the config: like the federated partitions, a Ray worker that
serves a client for the first time rebuilds the stream (:func:`build_stream`, the continual
paradigm's own scenarios, so an experience here is the one a continual run has) and every
experience's partition from the seed alone; nothing but indices travels or is kept.

- The stream: ``n_experiences`` experiences of the ``scenario`` (class-incremental: each a
  slice of a seeded class order, labels as the continual paradigm gives them).
- Phases: round r (1-based) belongs to phase ``(r - 1) // rounds_per_task``; a run has
  ``n_experiences`` phases.
- Schedules: ``sync`` (every client trains experience p in phase p: GLFC's setting, Dong et
  al. 2022); ``async`` (client c trains experience ``order_c[p]``, a seeded permutation per
  client: FedWeIT's setting, Yoon et al. 2021), so in one phase clients learn different tasks.
- Partitions: experience e's training images are split among all clients with the run's
  partition scheme, seeded by ``(seed, e)``; client c holds ``parts[e][c]`` in the phases in
  which it trains e.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paralab.strategies.federated.client import client_seed


@dataclass
class Schedule:
    """The stream and who holds what (module docstring)."""

    experiences: list[Any]  # continual Experience objects (train, test, classes...)
    parts: list[Sequence[np.ndarray]]  # [experience][client] -> indices into experience.train
    orders: list[list[int]]  # [client] -> experience trained in each phase
    rounds_per_task: int

    def phase(self, rnd: int) -> int:
        return (rnd - 1) // self.rounds_per_task

    def experience_of(self, cid: int, rnd: int) -> int:
        return self.orders[cid][self.phase(rnd)]

    def last_round_of_phase(self, rnd: int) -> bool:
        return rnd % self.rounds_per_task == 0


def task_orders(cfg: Any, seed: int) -> list[list[int]]:
    """Each client's experience per phase: 0..n-1 for all (sync), or a seeded permutation per
    client (async; client 0 keeps the natural order so runs differ only where they must)."""
    n = cfg.n_experiences
    if cfg.schedule == "sync":
        return [list(range(n)) for _ in range(cfg.num_clients)]
    orders = []
    for cid in range(cfg.num_clients):
        rng = np.random.default_rng(client_seed(seed, 0, cid, salt=23))
        orders.append(list(range(n)) if cid == 0 else rng.permutation(n).tolist())
    return orders


def build_schedule(config: Any, data: Any, task: Any) -> Schedule:
    """The run's stream, per-experience partitions and client orders."""
    from paralab.strategies.continual.scenarios import stream_for
    from paralab.strategies.federated.partition import partition

    cfg = config.paradigm
    experiences = stream_for(cfg, data, task)
    part = cfg.partition
    seed = config.seed if part.seed is None else part.seed
    parts = [
        partition(
            np.asarray(task.partition_labels(exp.train.targets)),
            cfg.num_clients,
            part.scheme,
            seed=seed * 1_009 + e,
            alpha=part.alpha,
            shards_per_client=part.shards_per_client,
            samples_per_client=part.samples_per_client,
        )
        for e, exp in enumerate(experiences)
    ]
    return Schedule(experiences, parts, task_orders(cfg, config.seed), cfg.rounds_per_task)


def experience_labels(schedule: Schedule, scenario: str) -> list[str]:
    """Row and column names of the accuracy matrix: ``i:classes`` (or ``i`` for domains)."""
    return [
        f"{i}:" + ",".join(map(str, e.classes)) if scenario != "domain" else str(i)
        for i, e in enumerate(schedule.experiences)
    ]
