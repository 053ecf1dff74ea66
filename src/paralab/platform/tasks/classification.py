"""The classification Lightning module: any registered classifier, torchmetrics accuracy."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from paralab.platform.models.base import Classifier
from paralab.platform.schema import OptimConfig
from paralab.platform.tasks.optim import build_optimizer, build_scheduler


class ClassificationTask(L.LightningModule):
    """Cross-entropy training of ``model``; logs ``{train,val,test}/{loss,acc}`` per epoch."""

    def __init__(self, model: Classifier, num_classes: int, optim: OptimConfig) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.criterion = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = self.criterion(logits, y)
        self.train_acc.update(logits.detach(), y)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(y),
                 sync_dist=True)  # fmt: skip
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str, metric: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self.model(x)
        metric.update(logits, y)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log(f"{stage}/acc", metric, on_epoch=True)

    def validation_step(self, batch, _: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch, _: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model.parameters(), self.optim)
        trainer = self.trainer
        steps = max(1, int(trainer.estimated_stepping_batches) // max(1, trainer.max_epochs))
        scheduler = build_scheduler(optimizer, self.optim, trainer.max_epochs, steps)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
