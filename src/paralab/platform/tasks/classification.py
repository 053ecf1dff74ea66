"""Image classification: cross-entropy on logits, accuracy as the headline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from paralab.platform.tasks.base import Batch, Task, TaskConfig, register_task


@dataclass
class ClassificationConfig(TaskConfig):
    name: str = "classification"


@register_task("classification", config=ClassificationConfig)
class Classification(Task):
    """One label per image: cross-entropy (``optim.label_smoothing``), top-1 accuracy."""

    headline = "acc"
    data_kind = "classification"
    model_kind = "classification"
    split_by = "label"
    attacks = ("sign_flip", "gaussian", "label_flip")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)

    def metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return MetricCollection(
            {"acc": MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)}
        )

    def partition_labels(self, targets: torch.Tensor) -> torch.Tensor:
        return targets

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        from paralab.platform.tasks.pictures import draw_classification

        x, y = self.unpack(batch)
        with torch.no_grad():
            predicted = self.forward(model, x).argmax(1)
        draw_classification(x, y, predicted, self.classes, path)
