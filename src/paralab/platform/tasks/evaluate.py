"""The one evaluation loop: any task, any model, any batches; every paradigm calls it.

Supervised runs evaluate inside Lightning (:mod:`.module` uses the same task metrics, synced by
torchmetrics across processes); the continual paradigm calls this after every experience for
each test experience, the federated server for the global model and each client for its own
data. Metrics are named without a stage prefix (``loss``, ``acc``, ``miou``...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from paralab.platform.tasks.base import Task, to_device


def evaluate(
    task: Task,
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device | str = "cpu",
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """The task's metrics and mean loss of ``model`` over ``batches`` (eval mode, no grad).

    ``forward`` replaces ``task.forward(model, x)`` (e.g. a multi-head model called with its
    task label). The model is left in eval mode.
    """
    device = torch.device(device)
    metrics = task.metrics().to(device)
    loss_sum, seen = torch.zeros((), device=device, dtype=torch.float64), 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            x, y = task.unpack(to_device(batch, device))
            outputs = forward(x) if forward is not None else task.forward(model, x)
            n = task.count(y)
            loss_sum += task.loss(outputs, y).double() * n
            metrics.update(outputs, y)
            seen += n
    if seen == 0:
        return {}
    return {"loss": float(loss_sum) / seen, **task.summarize(metrics.compute())}


def prefixed(values: dict[str, float], stage: str) -> dict[str, float]:
    """``{"acc": ..}`` -> ``{"test/acc": ..}``."""
    return {f"{stage}/{k}": v for k, v in values.items()}
