"""Every place paralab relies on Avalanche 0.6 internals, in one module.

- ``_make_taskaware_classification_dataset`` (private): the only call that builds a task-aware
  dataset from a plain one with given ``targets`` and task labels, which the scenario, the class
  timeline and the replay buffers read.
- ``SynapticIntelligencePlugin.extract_weights``: patched (see :func:`_si_extract_weights`).
- ``BaseSGDTemplate._stop_training``: the flag ``stop_training()`` sets. Avalanche clears it
  only at the start of the next epoch, so a stop in an experience's last epoch would end the
  next experience before its first step; :func:`clear_stop` clears it.

``tests/strategies/test_avalanche_compat.py`` fails with a message naming what moved when an
upgrade changes either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_classification_dataset,
)
from avalanche.training.plugins import SynapticIntelligencePlugin
from torch import nn


def taskaware_dataset(dataset: torch.utils.data.Dataset, task_label: int, targets: Sequence[int]):
    """An Avalanche dataset over ``dataset`` (items ``(x, y)``; ``y`` any tensor) whose samples
    carry ``task_label`` and one class label each in ``targets``."""
    return _make_taskaware_classification_dataset(dataset, task_labels=task_label, targets=targets)


@torch.no_grad()
def _si_extract_weights(model: nn.Module, target: dict, excluded_parameters) -> None:
    for name, param in SynapticIntelligencePlugin.allowed_parameters(model, excluded_parameters):
        target[name].data = param.detach().cpu().flatten().clone()


def clear_stop(strategy) -> None:
    """Undo a ``strategy.stop_training()`` that its last epoch left set (module docstring)."""
    if not hasattr(strategy, "_stop_training"):
        raise AttributeError(
            "Avalanche's template no longer has _stop_training: the iteration budget "
            "(paradigm.iterations) needs another way to stop an experience's training"
        )
    strategy._stop_training = False


def patch_synaptic_intelligence() -> None:
    """Avalanche 0.6's SI snapshots weights with ``param.detach().cpu().flatten()``: on a CPU that
    is a view of the live parameter, so "old" and "new" weights are one tensor, the importance is
    0 and SI trains exactly like naive. Snapshot copies instead (a no-op change on GPUs)."""
    SynapticIntelligencePlugin.extract_weights = staticmethod(_si_extract_weights)


patch_synaptic_intelligence()
