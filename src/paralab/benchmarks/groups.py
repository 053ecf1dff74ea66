"""A parallel suite's placement groups: a federated run on a cluster and its clients, reserved
as one (see :mod:`paralab.strategies.federated.placement` for what the run does with it).

Kept apart from :mod:`.parallel`, which schedules runs: this module only turns one run's request
into Ray options, the environment that names the group to the run, and the group itself.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any


def run_bundle(resources: dict[str, float]) -> dict[str, float]:
    """A run's request (``num_cpus``, ``num_gpus``, ``memory``) as a Ray bundle."""
    keys = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
    return {keys[k]: v for k, v in resources.items() if v}


def placed(
    label: str, resources: dict[str, float], clients: list[dict[str, float]], env: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str], Any]:
    """The Ray options, environment and placement group (or None) of one run's task: a run
    with ``clients`` runs in bundle 0 of a group that also holds its clients' bundles, named to
    the run by ``$PARALAB_PLACEMENT_GROUP``; Ray starts the task once the whole group is
    granted."""
    from paralab.strategies.federated.placement import ENV, RUN_BUNDLE, reserve

    run_env = {k: v for k, v in env.items() if k != ENV}
    if not clients:
        return dict(resources), run_env, None
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    name = f"{label}/{uuid.uuid4().hex[:8]}"
    group = reserve(name, run_bundle(resources), clients)
    strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=RUN_BUNDLE)
    return {**resources, "scheduling_strategy": strategy}, {**run_env, ENV: name}, group


def release(group: Any) -> None:
    """Remove a run's group once the run has ended (None: it had none)."""
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        with contextlib.suppress(Exception):
            remove_placement_group(group)
