"""Semantic segmentation: a class per pixel, mean IoU as the headline.

Scores come from one confusion matrix per evaluation (torchmetrics'
``MulticlassConfusionMatrix``, so DDP sums it across processes): per-class IoU
``tp / (tp + fp + fn)``, their mean over the classes that occur in the targets or the predictions
(a class absent from both has no IoU, not an IoU of 0), and pixel accuracy. Pixels labelled
``ignore_index`` (255: void, or padding from a crop) count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from paralab.platform.bounds import bounded
from paralab.platform.data.augment import IGNORE_INDEX
from paralab.platform.tasks.base import Batch, Task, TaskConfig, register_task


@dataclass
class SegmentationConfig(TaskConfig):
    name: str = "segmentation"
    dice_weight: float = bounded(0.0, ge=0)


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU from a (true, predicted) confusion matrix; NaN where a class never occurs."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """mIoU, pixel accuracy, per-class IoU, and the mIoU of predicting background everywhere
    on the same pixels (``miou_all_background``: the floor a model must clearly beat)."""
    iou = iou_from_confusion(confusion)
    total = confusion.sum().double()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    accuracy = confusion.diagonal().sum() / total if total > 0 else nan
    present = confusion.sum(1) > 0  # classes in the targets: all-background scores 0 on each
    background = confusion[0].sum() / total if total > 0 else nan
    baseline = background / present.sum().clamp_min(1) if present[0] else torch.zeros_like(nan)
    return {
        "miou": iou.nanmean(),
        "pixel_acc": accuracy.double(),
        "miou_all_background": baseline.double(),
        "iou": iou,
    }


def _confusion_metric(num_classes: int):
    """torchmetrics' confusion matrix whose ``compute()`` gives mIoU, pixel accuracy and IoUs."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    class SegmentationScores(MulticlassConfusionMatrix):
        def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
            labels = preds.argmax(1) if preds.ndim == target.ndim + 1 else preds
            super().update(labels.flatten(), target.flatten())

        def compute(self) -> dict[str, torch.Tensor]:
            return scores_from_confusion(super().compute())

    return SegmentationScores(num_classes, ignore_index=IGNORE_INDEX, validate_args=False)


@register_task("segmentation", config=SegmentationConfig)
class Segmentation(Task):
    """Per-pixel cross-entropy (void pixels ignored, optional soft Dice); mIoU, pixel accuracy
    and per-class IoU (``iou/<class>``)."""

    headline = "miou"
    data_kind = "segmentation"
    model_kind = "segmentation"
    split_by = "dominant class"
    attacks = ("sign_flip", "gaussian", "label_flip")
    scenarios = ("class", "domain")  # one head per task has no meaning for a per-pixel head

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(
            outputs, targets, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing
        )
        if self.cfg.dice_weight > 0:
            loss = loss + self.cfg.dice_weight * soft_dice_loss(outputs, targets)
        return loss

    def metrics(self):
        return _confusion_metric(self.num_classes)

    def summarize(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        values = {k: float(v) for k, v in computed.items() if k != "iou"}
        for name, iou in zip(self.classes, computed["iou"].tolist(), strict=True):
            values[f"iou/{name}"] = iou
        return values

    def score(self, values: dict[str, float], classes: list[int] | None = None) -> float:
        """Mean IoU over ``classes`` (ids into ``self.classes``) that occurred; all if None."""
        if classes is None:
            return values["miou"]
        ious = [values[f"iou/{self.classes[c]}"] for c in classes]
        ious = [v for v in ious if v == v]  # NaN: the class never occurred
        return sum(ious) / len(ious) if ious else float("nan")

    def incremental_classes(self) -> list[int]:
        """The foreground classes: background is in every experience (Cermelli et al. 2020)."""
        return list(range(1, self.num_classes))

    def partition_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """The dominant foreground class of each mask (0 for an all-background image)."""
        return dominant_class(targets, self.num_classes)

    def flip_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """Foreground class c becomes ``num_classes - c``; background and void stay."""
        foreground = (targets > 0) & (targets != IGNORE_INDEX)
        return torch.where(foreground, self.num_classes - targets, targets)

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        from paralab.platform.tasks.pictures import draw_segmentation

        x, y = self.unpack(batch)
        with torch.no_grad():
            predicted = self.forward(model, x).argmax(1)
        draw_segmentation(x, y, predicted, self.classes, path)


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch (void pixels left out)."""
    valid = targets != IGNORE_INDEX
    probs = logits.softmax(1) * valid.unsqueeze(1)
    onehot = nn.functional.one_hot(targets.where(valid, 0), logits.shape[1]).movedim(-1, 1)
    onehot = onehot * valid.unsqueeze(1)
    inter = (probs * onehot).sum((0, 2, 3))
    sizes = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (sizes + 1)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def dominant_class(masks: torch.Tensor, num_classes: int, chunk: int = 4096) -> torch.Tensor:
    """Per mask, the foreground class with the most pixels (0 when there is none)."""
    out = torch.zeros(len(masks), dtype=torch.long)
    for start in range(0, len(masks), chunk):
        part = masks[start : start + chunk].long().flatten(1)
        part = part.where(part < num_classes, 0)  # void pixels count as background
        counts = torch.zeros(len(part), num_classes, dtype=torch.long)
        counts.scatter_add_(1, part, torch.ones_like(part))
        counts[:, 0] = 0
        best = counts.argmax(1)
        out[start : start + len(part)] = torch.where(counts.amax(1) > 0, best, 0)
    return out
