"""One LightningModule for every task: the task unpacks, forwards, scores; Lightning does the rest.

Logged per epoch: ``{train,val,test}/loss`` (batch-size-weighted mean, synced across processes)
and every metric the task's collection computes (``train/acc``, ``val/miou``, ``test/iou/<class>``
...), computed once per epoch from torchmetrics state that DDP sums across processes.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from paralab.platform.schema import OptimConfig
from paralab.platform.tasks.base import Task, detached
from paralab.platform.tasks.optim import build_optimizer, build_scheduler

STAGES = ("train", "val", "test")


class TaskModule(L.LightningModule):
    """Trains ``model`` on ``task`` with the run's optimizer and schedule."""

    def __init__(self, task: Task, model: nn.Module, optim: OptimConfig) -> None:
        super().__init__()
        self.task = task
        self.model = model
        self.optim = optim
        for stage in STAGES:  # attributes, so Lightning moves them with the model
            setattr(self, f"{stage}_metrics", task.metrics())
        self._updated: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.forward(self.model, x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = self.task.unpack(batch)
        outputs = self.task.forward(self.model, x)
        loss = self.task.loss(outputs, y)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(detached(outputs) if stage == "train" else outputs, y)
        self._updated.add(stage)
        self.log(f"{stage}/loss", loss.detach(), on_step=False, on_epoch=True,
                 batch_size=self.task.count(y), sync_dist=True)  # fmt: skip
        return loss

    def _log_metrics(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        if stage not in self._updated:
            return
        self._updated.discard(stage)
        values = self.task.summarize(metrics.compute())
        metrics.reset()
        # already summed across processes by torchmetrics; sync_dist averages equal values
        # (and keeps Lightning from warning about unsynced epoch values under DDP)
        logged = {f"{stage}/{k}": v for k, v in values.items()}
        self.log_dict(logged, on_step=False, on_epoch=True, sync_dist=True)

    def training_step(self, batch, _: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, _: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, _: int) -> None:
        self._step(batch, "test")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # the epoch's train metrics, logged with its last batch: callbacks' epoch-end hooks
        # (the epoch line) run before this module's, and would show the previous epoch's
        # (or with the step that ends a trainer.max_steps budget: StepBudget stops the fit there)
        if batch_idx + 1 >= self.trainer.num_training_batches or self.trainer.should_stop:
            self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model.parameters(), self.optim)
        trainer = self.trainer
        if trainer.max_steps > 0:  # a step budget: the schedule runs over it as one epoch
            epochs, steps = 1, trainer.max_steps
        else:
            epochs = trainer.max_epochs
            steps = max(1, int(trainer.estimated_stepping_batches) // max(1, epochs))
        scheduler = build_scheduler(optimizer, self.optim, epochs, steps)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
