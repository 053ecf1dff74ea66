"""Object detection: boxes and classes per image, COCO mAP as the headline.

A batch is images with padded box targets (N, K, 5) (see :mod:`paralab.platform.data.boxes`):
one tensor, so every paradigm moves, subsets and partitions it as it does class labels. ``unpack``
turns it into torchvision's per-image dicts, which a detector takes *as input* with the images
(``makes_inputs``): detectors compute their own losses, since matching predictions to objects is
part of the model (anchors, proposals, Hungarian matching). ``forward`` returns a
:class:`~paralab.platform.models.detection.base.DetectionOutput`; the loss is the sum of its
terms.

Scores come from torchmetrics' ``MeanAveragePrecision`` (the COCO evaluator of pycocotools, so
DDP gathers every process's boxes before scoring): ``map`` (IoU 0.50:0.95, the headline),
``map_50``, ``map_75``, ``mar_100`` (mean recall at 100
detections), ``ap/<class>``, and the trivial baseline the issue asks every detector to beat
(``baseline_map``, ``baseline_map_50``): one box of the objects' mean size at the image centre,
labelled with the most frequent class, on the same images (its size and class are taken from
the evaluated objects themselves, which can only flatter it). A class with no objects in the
evaluated images has no AP (NaN, not 0), as COCO reports -1. Training passes produce no
detections, so ``train/`` holds the loss only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.data.boxes import box_dicts
from paralab.platform.tasks.base import Batch, Task, TaskConfig, register_task

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData

SUMMARY = ("map", "map_50", "map_75", "mar_100")  # COCO size bands: a 64 px canvas is all "small"


@dataclass
class DetectionConfig(TaskConfig):
    name: str = "detection"


@register_task("detection", config=DetectionConfig)
class Detection(Task):
    """Boxes and classes: the detector's own losses; COCO mAP, mAP@0.5/.75, recall, AP per class."""

    headline = "map"
    data_kind = "detection"
    model_kind = "detection"
    split_by = "most frequent class in the image"
    attacks = ("sign_flip", "gaussian", "label_flip")
    scenarios = ("class",)  # a domain shift would have to move every box with its pixels
    makes_inputs = True  # the targets go into the detector with the images
    scores_training = False
    image_size: tuple[int, int] | None = None  # set by bind: where the baseline's box goes

    def bind(self, data: ClassificationData) -> None:
        self.image_size = tuple(data.image_size)

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:
        """Beyond data and model kinds: a set-prediction detector needs a query per object."""
        super().check(config, data)
        queries = getattr(config.model, "num_queries", None)
        most = int((data.train.targets[..., 0] >= 0).sum(1).max()) if len(data.train) else 0
        if queries is not None and most > queries:
            raise ConfigError(
                f"model.num_queries={queries}: an image of data={config.data.name} has {most} "
                f"objects, and each needs a query. Set model.num_queries={most} or more"
            )

    def unpack(self, batch: Batch) -> tuple[tuple[torch.Tensor, list[dict]], torch.Tensor]:
        images, targets = batch[0], batch[1]
        return (images, box_dicts(targets)), targets

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        images, targets = inputs
        return model(images, targets)

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if not outputs.losses:
            raise ValueError("the detector returned no losses: call it with targets")
        return sum(outputs.losses.values())

    def metrics(self):
        if self.image_size is None:
            raise RuntimeError("bind the detection task to its data before scoring")
        return _detection_metric(self.image_size)

    def summarize(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        def value(v: torch.Tensor) -> float:
            v = float(v)
            return float("nan") if v < 0 else v  # COCO's -1: no objects to score

        values = {k: value(computed[k]) for k in (*SUMMARY, *_BASELINE) if k in computed}
        if "map_per_class" in computed:
            per_class = dict.fromkeys(range(self.num_classes), float("nan"))
            ids = computed["classes"].flatten().tolist()
            aps = computed["map_per_class"].flatten().tolist()
            per_class |= {int(c): value(torch.tensor(a)) for c, a in zip(ids, aps, strict=True)}
            values |= {f"ap/{self.classes[c]}": ap for c, ap in per_class.items()}
        return values

    def score(self, values: dict[str, float], classes: list[int] | None = None) -> float:
        """Mean AP over ``classes`` (ids into ``self.classes``) that had objects; all if None."""
        if classes is None:
            return values["map"]
        aps = [values.get(f"ap/{self.classes[c]}", float("nan")) for c in classes]
        aps = [a for a in aps if a == a]
        return sum(aps) / len(aps) if aps else float("nan")

    def partition_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """Each image's most frequent class (the lowest id on a tie; 0 for an empty image)."""
        labels = targets[..., 0].long()
        real = labels >= 0
        counts = torch.zeros(len(labels), self.num_classes, dtype=torch.long)
        counts.scatter_add_(1, labels.clamp_min(0), real.long())
        return counts.argmax(1)

    def flip_labels(self, targets: torch.Tensor) -> torch.Tensor:
        """Object class c becomes ``num_classes - 1 - c``; padding stays."""
        out = targets.clone()
        real = out[..., 0] >= 0
        out[..., 0] = torch.where(real, self.num_classes - 1 - out[..., 0], out[..., 0])
        return out

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        from paralab.platform.tasks.pictures import draw_detection

        (images, targets), _ = self.unpack(batch)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            detections = self.forward(model, (images, None)).detections
        model.train(was_training)
        draw_detection(images, targets, detections, self.classes, path)


_BASELINE = ("baseline_map", "baseline_map_50")
#: MeanAveragePrecision's per-image list states (box detection: its mask lists stay empty)
_STATES = (
    "detection_box",
    "detection_scores",
    "detection_labels",
    "groundtruth_box",
    "groundtruth_labels",
    "groundtruth_crowds",
    "groundtruth_area",
)


def centre_baseline(targets: list[dict[str, torch.Tensor]], size: tuple[int, int]) -> list[dict]:
    """One box per image: the objects' mean width and height at the image centre, labelled with
    the most frequent class, score 1 (the floor every detector must clearly beat)."""
    boxes = torch.cat([t["boxes"] for t in targets]) if targets else torch.zeros(0, 4)
    labels = torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0)
    if not len(boxes):
        return [_empty(t["boxes"].device) for t in targets]
    w, h = (boxes[:, 2] - boxes[:, 0]).mean(), (boxes[:, 3] - boxes[:, 1]).mean()
    cx, cy = size[1] / 2, size[0] / 2
    box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]).view(1, 4)
    label = torch.bincount(labels.long()).argmax().view(1)
    one = torch.ones(1, device=box.device)
    return [{"boxes": box, "scores": one, "labels": label} for _ in targets]


def _empty(device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(0, 4, device=device),
        "scores": torch.zeros(0, device=device),
        "labels": torch.zeros(0, dtype=torch.long, device=device),
    }


def _detection_metric(image_size: tuple[int, int]):
    """torchmetrics' COCO mAP, fed from detector outputs and padded targets, with the
    centre-box baseline scored on the same objects."""
    from torchmetrics.detection import MeanAveragePrecision

    class DetectionScores(MeanAveragePrecision):
        def update(self, outputs: Any, targets: torch.Tensor) -> None:
            detections = outputs.detections
            if detections is None:  # a training pass: nothing to score
                return
            for d in detections:
                if not (torch.isfinite(d["boxes"]).all() and torch.isfinite(d["scores"]).all()):
                    raise FloatingPointError(
                        "the detector produced non-finite boxes or scores (training diverged): "
                        "lower optim.lr or set trainer.gradient_clip_val"
                    )
            super().update([{k: v.detach() for k, v in d.items()} for d in detections],
                           box_dicts(targets))  # fmt: skip

        def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
            """Gather every process's per-image lists whole. torchmetrics' own sync makes one
            collective per list entry, so processes holding different numbers of images (each
            test image is tested once, on one process) would call mismatched collectives and
            crash; ``all_gather_object`` sends each process's lists in one call."""
            import torch.distributed as dist

            group = process_group or self.process_group
            for name in _STATES:
                local = [t.cpu() for t in getattr(self, name)]
                parts: list[Any] = [None] * dist.get_world_size(group)
                dist.all_gather_object(parts, local, group=group)
                setattr(self, name, [t.to(self.device) for part in parts for t in part])

        def compute(self) -> dict[str, torch.Tensor]:
            if not self.groundtruth_labels and not self.detection_labels:
                return {}
            values = super().compute()
            values |= self._baseline()
            return values

        def _baseline(self) -> dict[str, torch.Tensor]:
            truths = [
                {"boxes": b, "labels": lab}
                for b, lab in zip(self.groundtruth_box, self.groundtruth_labels, strict=True)
            ]
            # already gathered: the floor scores these lists here, without a second sync
            floor = MeanAveragePrecision(
                box_format="xyxy", backend="pycocotools", sync_on_compute=False
            )
            floor.update(centre_baseline(truths, image_size), truths)
            result = floor.compute()
            return {"baseline_map": result["map"], "baseline_map_50": result["map_50"]}

    return DetectionScores(box_format="xyxy", class_metrics=True, backend="pycocotools")
