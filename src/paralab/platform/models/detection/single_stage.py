"""FCOS (Tian et al. 2019), a single-stage dense detector: every location of every pyramid level
predicts class scores, the distances to the four sides of its box, and a centre-ness, in one pass
over the grid (the YOLO idea, without anchor boxes to tune).

Why FCOS for the single-stage slot: torchvision has no YOLO, and its FCOS head needs no anchor
shapes (one point per location), so it carries over to any pyramid strides; the loss (sigmoid
focal loss for classes, GIoU for boxes, BCE for centre-ness) is torchvision's
``FCOSHead.compute_loss``. Composed here rather than torchvision's ``FCOS`` class, which owns its
backbone and resizes images to 800 px: the head sits on :class:`~.base.Detector`'s pyramid.

Locations come from ``AnchorGenerator`` with one square per location the size of its level's
stride (torchvision's rule; 2 px at least, for a stride-1 level). Matching follows torchvision's
``FCOS.compute_loss``: a location is positive for the smallest box that contains it, whose centre
is within ``center_sampling_radius`` strides, and whose farthest side lies in the level's range
(4-8 strides; the finest level from 0, the coarsest without limit). Inference follows its
``postprocess_detections``: score sqrt(class x centre-ness) above ``score_threshold``, the
``topk_candidates`` best per level, per-class NMS, ``detections_per_image`` kept. Both are
reimplemented here (they are methods of torchvision's model class); labels are the dataset's
0..C-1 (sigmoid classes: no background id). The towers are ``head_convs`` deep (torchvision: 4)
with GroupNorm (:func:`.torchvision_compat.fcos_head`).

Cost (measured with the command in :mod:`.base`, ``name = "fcos"``): 379,583 parameters, 0.17 s per
training step (0.17-0.18 s over two runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paralab.platform.bounds import bounded
from paralab.platform.models.base import Backbone, InputSpec
from paralab.platform.models.detection import torchvision_compat as compat
from paralab.platform.models.detection.base import (
    DetectionOutput,
    Detector,
    DetectorConfig,
    Targets,
    build_detector,
)
from paralab.platform.models.registry import register_model


@dataclass
class FCOSConfig(DetectorConfig):
    """``head_convs``: conv-GroupNorm-ReLU layers in each tower (class, box);
    ``center_sampling_radius``: how near (in strides) a box's centre a positive location lies;
    ``topk_candidates``: detections kept per level before NMS; ``nms_threshold``: the IoU above
    which a lower-scoring detection of a class is dropped."""

    name: str = "fcos"
    head_convs: int = bounded(2, ge=0)
    center_sampling_radius: float = bounded(1.5, gt=0)
    topk_candidates: int = bounded(200, ge=1)
    nms_threshold: float = bounded(0.6, gt=0, le=1)


class FCOS(Detector):
    """Pyramid -> ``head`` (class logits, side distances, centre-ness per location)."""

    def __init__(self, backbone: Backbone, cfg: FCOSConfig, spec: InputSpec) -> None:
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        super().__init__(backbone, cfg, spec)
        sizes = tuple((max(stride, 2),) for stride in self.strides)
        self.anchors = AnchorGenerator(sizes, ((1.0,),) * len(sizes))
        self.head = compat.fcos_head(self.out_channels, self.num_classes, cfg.head_convs)

    def forward(self, images: torch.Tensor, targets: Targets | None = None) -> DetectionOutput:
        if self.training:
            targets = self.require_targets(targets)
        maps = list(self.pyramid(images).values())
        outputs = self.head(maps)
        anchors = self.anchors(compat.image_list(images), maps)
        per_level = [m.shape[-2] * m.shape[-1] for m in maps]
        losses = {}
        if targets is not None:
            matched = [
                self.match(a, t["boxes"], per_level) for a, t in zip(anchors, targets, strict=True)
            ]
            losses = self.head.compute_loss(targets, outputs, anchors, matched)
        if self.training:
            return DetectionOutput(losses, None)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return DetectionOutput(losses, self.detect(outputs, anchors, per_level, size))

    def match(
        self, anchors: torch.Tensor, boxes: torch.Tensor, per_level: list[int]
    ) -> torch.Tensor:
        """The index of the box each location answers for, -1 for background."""
        if boxes.numel() == 0:
            return torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        points = (anchors[:, :2] + anchors[:, 2:]) / 2
        sizes = anchors[:, 2] - anchors[:, 0]
        radius = self.cfg.center_sampling_radius * sizes[:, None]
        near = (points[:, None, :] - centres[None]).abs().amax(dim=2) < radius
        x, y = points[:, :1], points[:, 1:]
        sides = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], 2)
        lower, upper = sizes * 4, sizes * 8
        lower[: per_level[0]] = 0
        upper[-per_level[-1] :] = float("inf")
        reach = sides.amax(dim=2)
        fits = near & (sides.amin(dim=2) > 0) & (reach > lower[:, None]) & (reach < upper[:, None])
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        best, index = (fits.float() * (1e8 - areas[None])).max(dim=1)  # the smallest box fitting
        index[best < 1e-5] = -1
        return index

    def detect(
        self,
        outputs: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
        per_level: list[int],
        size: tuple[int, int],
    ) -> list[dict[str, torch.Tensor]]:
        """Scores, top-k per level, boxes decoded and clipped to the image, per-class NMS."""
        from torchvision.ops import batched_nms, clip_boxes_to_image

        cfg, classes = self.cfg, self.num_classes
        scores = torch.sqrt(
            torch.sigmoid(outputs["cls_logits"]) * torch.sigmoid(outputs["bbox_ctrness"])
        )
        boxes = self.head.box_coder.decode(outputs["bbox_regression"], torch.stack(anchors))
        boxes = clip_boxes_to_image(boxes, size)
        starts = torch.tensor([0, *per_level[:-1]]).cumsum(0).tolist()
        detections = []
        for image_scores, image_boxes in zip(scores, boxes, strict=True):
            picked = []
            for start, count in zip(starts, per_level, strict=True):
                flat = image_scores[start : start + count].flatten()
                (index,) = torch.where(flat > cfg.score_threshold)
                top = flat[index].topk(min(cfg.topk_candidates, len(index))).indices
                picked.append(index[top] + start * classes)
            index = torch.cat(picked)
            anchor, label = index // classes, index % classes
            kept_boxes, kept_scores = image_boxes[anchor], image_scores.flatten()[index]
            keep = batched_nms(kept_boxes, kept_scores, label, cfg.nms_threshold)
            keep = keep[: cfg.detections_per_image]
            detections.append(
                {"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep]}
            )
        return detections


@register_model("fcos", config=FCOSConfig, task="detection")
def fcos(cfg: FCOSConfig, spec: InputSpec) -> FCOS:
    """FCOS: single-stage dense detector, torchvision's FCOS head on a backbone's pyramid."""
    return build_detector(FCOS, cfg, spec)  # type: ignore[return-value]
