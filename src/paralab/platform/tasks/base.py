"""The task seam: what a paradigm needs to train and judge a model without knowing its family.

A task says what is learned and how it is judged; a paradigm (supervised, continual, federated)
says how training is organised and drives whatever task it is given. The seam follows
Avalanche's problem types (only unpacking a batch, the forward and the criterion are
task-specific) and timm's model surface (heads sit on ``forward_intermediates``):

- ``build_model``: the registry model for this task and data (its heads), checked to fit both;
- ``unpack`` a batch (already on the device) into inputs and targets, ``forward`` and ``loss``
  (one scalar to minimise); a pretext task's ``unpack`` makes its own inputs and targets from
  the images (rotated copies, shuffled tiles, two augmented views: ``makes_inputs``), and its
  outputs and targets may be small structures of tensors that only the task itself reads;
  ``collate`` joins items into a batch and ``fetch`` takes a batch of examples by index (the
  in-memory sets stack a whole batch in one indexing; targets that do not stack, such as
  detection's lists of boxes, come through ``collate``);
- ``metrics()``: a fresh torchmetrics collection, updated with ``(outputs, targets)`` and synced
  across processes by torchmetrics; ``summarize`` turns its ``compute()`` into flat floats named
  without a stage prefix (``acc``, ``miou``, ``iou/<class>``);
- ``headline`` and ``higher_is_better``: what checkpoints keep, comparisons rank and federated
  targets count (``val/<headline>``, ``test/<headline>``);
- ``score``: the headline restricted to some classes (a continual accuracy-matrix cell);
- ``partition_labels``: one label per example, which federated partitions split by and which
  the class histograms count; ``split_by`` names what that label means;
- ``attacks``: the Byzantine attacks that make sense for the task's targets; ``scenarios`` the
  continual scenarios, and ``incremental_classes`` the classes a class-incremental stream adds;
- ``draw``: a picture of predictions for the run folder.

Nothing here imports Lightning: federated workers run the task in a plain loop (importing
Lightning there costs ~8 s and 280 MB per worker). :mod:`.module` wraps any task in one generic
LightningModule, and :func:`.evaluate.evaluate` is the one evaluation loop every paradigm uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.registry import Registry

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData

Batch = Any


@dataclass
class TaskConfig:
    name: str = "classification"


class Task(ABC):
    """One kind of learning problem. Subclasses set the class attributes and the abstract
    methods; a task instance is built per run from its config and the data's class names."""

    #: The metric (without stage prefix) checkpoints keep and comparisons rank.
    headline: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: The ``task`` a dataset must declare (its registry meta) to feed this task.
    data_kind: ClassVar[str]
    #: What :meth:`partition_labels` returns per example, for messages and histograms.
    split_by: ClassVar[str] = "label"
    #: ``paradigm.byzantine.attack`` values that make sense for these targets.
    attacks: ClassVar[tuple[str, ...]] = ("sign_flip", "gaussian")
    #: Continual scenarios the task's targets can be split into.
    scenarios: ClassVar[tuple[str, ...]] = ("class", "task", "domain")
    #: The models it trains: those whose registry meta ``task`` is this (a pretext task
    #: trains classifiers or dense models of the other tasks, with its own heads).
    model_kind: ClassVar[str]
    #: ``unpack`` builds the inputs from the images (pretext tasks), so a paradigm must call it
    #: rather than feed the batch's images to the model (Avalanche's own forward would).
    makes_inputs: ClassVar[bool] = False
    #: Training passes produce what the metrics score (False: a detector makes no detections
    #: and CLIP's random phrasings are not scored while training, so ``train/`` is the loss).
    scores_training: ClassVar[bool] = True

    def __init__(self, cfg: TaskConfig, classes: list[str], label_smoothing: float = 0.0) -> None:
        self.cfg = cfg
        self.classes = list(classes)
        self.label_smoothing = label_smoothing

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train_score(self) -> str:
        """The metric a training pass reports (federated clients' ``train_<name>``): the
        headline, unless it needs eval mode (a pretext task's k-NN monitor)."""
        return self.headline

    # -- fitting the task to data and model ----------------------------------------------------

    def bind(self, data: ClassificationData) -> None:  # noqa: B027
        """Take what the task needs of the loaded data beyond its class names (a pretext task
        that works on pixel values: the normalisation, to undo it)."""

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:
        """Refuse data and models this task cannot use (before any run folder exists)."""
        from paralab.platform.models import MODELS

        kind = data.task  # what the loaded data holds: labels or masks
        if kind != self.data_kind:
            raise ConfigError(
                f"task={self.name} needs a {self.data_kind} dataset; data={config.data.name} "
                f"gives {kind} targets. Choose task={_tasks_for(kind)} or one of the "
                f"{self.data_kind} datasets: {', '.join(_datasets_for(self.data_kind))}"
            )
        served = MODELS.get(config.model.name).meta.get("task", "classification")
        if served != self.model_kind:
            raise ConfigError(
                f"model={config.model.name} is a {served} model; task={self.name} needs one of: "
                f"{', '.join(models_for(self.model_kind))}. Set model=<one of those>"
            )

    def build_model(self, config: ResolvedConfig, spec: Any) -> nn.Module:
        """The registry model named in ``config.model`` for inputs ``spec``."""
        from paralab.platform.models import MODELS

        return MODELS.get(config.model.name).obj(config.model, spec)

    # -- one batch -------------------------------------------------------------------------------

    def collate(self, items: list) -> Batch:
        """Join dataset items into a batch (torch's default: stack tensors)."""
        return torch.utils.data.default_collate(items)

    def fetch(self, dataset: Any, indices: Any) -> Batch:
        """The examples ``indices`` of ``dataset`` as one batch: the dataset's own batched
        ``__getitems__`` when it has one, else its items through :meth:`collate`."""
        if hasattr(dataset, "__getitems__"):
            return dataset.__getitems__(indices)
        return self.collate([dataset[int(i)] for i in indices])

    def unpack(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of a batch (datasets yield ``(x, y)``; Avalanche adds ``t``)."""
        return batch[0], batch[1]

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scalar to minimise (mean over the batch)."""

    def count(self, targets: torch.Tensor) -> int:
        """Examples in a batch (images, whatever the target's shape)."""
        return len(targets)

    # -- judging ---------------------------------------------------------------------------------

    @abstractmethod
    def metrics(self) -> Any:
        """A fresh torchmetrics Metric or MetricCollection; ``compute()`` gives a dict."""

    def summarize(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        """Flat floats from ``metrics().compute()`` (a vector becomes one entry per class)."""
        return {k: float(v) for k, v in computed.items()}

    def score(self, values: dict[str, float], classes: list[int] | None = None) -> float:
        """The headline, restricted to ``classes`` where the task can (a matrix cell)."""
        return values[self.headline]

    # -- what paradigms split by -----------------------------------------------------------------

    @abstractmethod
    def partition_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """One class id per example (N,), for federated partitions and class histograms."""

    def incremental_classes(self) -> list[int]:
        """The class ids a class-incremental stream hands out, a slice per experience."""
        return list(range(self.num_classes))

    def flip_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """The label-flip attack: class c becomes ``num_classes - 1 - c``."""
        return self.num_classes - 1 - targets

    # -- pictures --------------------------------------------------------------------------------

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:  # noqa: B027
        """Write a picture of the model's predictions on ``batch`` to ``path`` (optional)."""


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` with every tensor in it (nested in tuples, lists, dicts) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def detached(outputs: Any) -> Any:
    """``outputs`` (a tensor or a structure of tensors) cut from the autograd graph."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return type(outputs)(*(detached(o) for o in outputs))
    if isinstance(outputs, list | tuple):
        return type(outputs)(detached(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: detached(v) for k, v in outputs.items()}
    return outputs


def _tasks_for(kind: str) -> str:
    return ", ".join(n for n in TASKS.names() if TASKS.get(n).obj.data_kind == kind) or "?"


def _datasets_for(kind: str) -> list[str]:
    from paralab.platform.data import DATASETS

    return [e.name for e in DATASETS.entries() if e.meta.get("task", "classification") == kind]


def models_for(task: str) -> list[str]:
    """The registered models whose heads serve ``task``."""
    from paralab.platform.models import MODELS

    return [e.name for e in MODELS.entries() if e.meta.get("task", "classification") == task]


TASKS: Registry = Registry("task")
register_task = TASKS.register
