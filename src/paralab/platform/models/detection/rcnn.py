"""Faster R-CNN (Ren et al. 2015): a region proposal network on the feature pyramid, then RoIAlign
and a two-layer MLP classifying and refining each proposal.

Why composed here and not torchvision's ``FasterRCNN``: that class owns its backbone (it would
be registered a second time beside ``self.backbone``, so every tensor twice in the state dict)
and resizes every image to 800 px. Here torchvision's components (``RegionProposalNetwork``,
``RPNHead``, ``AnchorGenerator``, ``RoIHeads`` with ``MultiScaleRoIAlign``, ``TwoMLPHead``,
``FastRCNNPredictor``) sit on :class:`~.base.Detector`'s pyramid, images at their own size.

Anchors follow the pyramid: each level gets sizes ``anchor_scales`` x its stride, in every
aspect ratio (cnn ``[16, 32, 64, 128]`` on 64 px: strides 2, 4, 8, so 8-64 px anchors for
items of 20-45 px). Samples and proposals are far fewer than torchvision's (64 anchors and 64
RoIs sampled per image, not 256 and 512; 100 proposals, not 2000): a 64 px canvas holds a few
objects, and the CPU pays per RoI. Labels shift by +1 inside (RoIHeads reserves
0 for background) and back on output. In eval mode with targets the RPN and RoIHeads run twice on
the same pyramid: once with their training flag set (losses, RNG forked so validation does not
move the run's random stream), once without (detections); see :mod:`.torchvision_compat`.

Cost (measured with the command in :mod:`.base`, ``name = "faster_rcnn"``): 1,144,581
parameters, 0.33 s per training step (0.33-0.34 s over two runs).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from paralab.platform.bounds import bounded, limits
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

if TYPE_CHECKING:
    from torchvision.models.detection.image_list import ImageList

log = logging.getLogger(__name__)


@dataclass
class FasterRCNNConfig(DetectorConfig):
    """``anchor_scales``: anchor sizes in multiples of each level's stride; ``aspect_ratios``:
    height/width of the anchors; ``rpn_*``: proposals kept per level before NMS, after NMS in
    training and in inference, anchors sampled per image for the RPN loss; ``box_*``: proposals
    sampled per image for the RoI loss; ``representation_size``: the MLP's width;
    ``nms_threshold``: the IoU above which a lower-scoring detection of a class is dropped."""

    name: str = "faster_rcnn"
    anchor_scales: list[float] = field(
        default_factory=lambda: [4.0, 8.0], metadata=limits(gt=0, min_items=1)
    )
    aspect_ratios: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0], metadata=limits(gt=0, min_items=1)
    )
    rpn_pre_nms_top_n: int = bounded(200, ge=1)
    rpn_post_nms_top_n_train: int = bounded(100, ge=1)
    rpn_post_nms_top_n_test: int = bounded(50, ge=1)
    rpn_batch_size_per_image: int = bounded(64, ge=1)
    box_batch_size_per_image: int = bounded(64, ge=1)
    representation_size: int = bounded(256, ge=1)
    nms_threshold: float = bounded(0.5, gt=0, le=1)


class FasterRCNN(Detector):
    """Pyramid -> ``rpn`` (proposals) -> ``roi_heads`` (classes and refined boxes)."""

    def __init__(self, backbone: Backbone, cfg: FasterRCNNConfig, spec: InputSpec) -> None:
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.roi_heads import RoIHeads
        from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
        from torchvision.ops import MultiScaleRoIAlign

        super().__init__(backbone, cfg, spec)
        sizes = tuple(
            tuple(round(s * stride) for s in cfg.anchor_scales) for stride in self.strides
        )
        anchors = AnchorGenerator(sizes, (tuple(cfg.aspect_ratios),) * len(sizes))
        log.debug("faster_rcnn anchors per level %s, ratios %s", sizes, cfg.aspect_ratios)
        post = {"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test}
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(self.out_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=cfg.rpn_batch_size_per_image,
            positive_fraction=0.5,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n, "testing": cfg.rpn_pre_nms_top_n},
            post_nms_top_n=post,
            nms_thresh=0.7,
        )
        levels = [str(i) for i in range(len(self.strides))]
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
            TwoMLPHead(self.out_channels * 7 * 7, cfg.representation_size),
            FastRCNNPredictor(cfg.representation_size, self.num_classes + 1),  # + background
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=cfg.box_batch_size_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=cfg.score_threshold,
            nms_thresh=cfg.nms_threshold,
            detections_per_img=cfg.detections_per_image,
        )

    def forward(self, images: torch.Tensor, targets: Targets | None = None) -> DetectionOutput:
        if self.training:
            targets = self.require_targets(targets)
        features = self.pyramid(images)
        batch = compat.image_list(images)
        shifted = None
        if targets is not None:  # RoIHeads' class 0 is background
            shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        if self.training:
            return DetectionOutput(self._losses(batch, features, shifted), None)
        losses = {}
        if shifted is not None:
            devices = [images.device.index or 0] if images.device.type == "cuda" else []
            with (
                compat.training_flag(True, self.rpn, self.roi_heads),
                torch.random.fork_rng(devices=devices),  # RoI sampling draws random numbers
            ):
                losses = self._losses(batch, features, shifted)
        proposals, _ = self.rpn(batch, features)
        found, _ = self.roi_heads(features, proposals, batch.image_sizes)
        detections = [
            {"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in found
        ]
        return DetectionOutput(losses, detections)

    def _losses(
        self, batch: ImageList, features: OrderedDict[str, torch.Tensor], targets: Targets
    ) -> dict[str, torch.Tensor]:
        proposals, rpn_losses = self.rpn(batch, features, targets)
        _, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        return {**rpn_losses, **roi_losses}


@register_model("faster_rcnn", config=FasterRCNNConfig, task="detection")
def faster_rcnn(cfg: FasterRCNNConfig, spec: InputSpec) -> FasterRCNN:
    """Faster R-CNN: RPN + RoIAlign + two-layer MLP head on a backbone's feature pyramid."""
    return build_detector(FasterRCNN, cfg, spec)  # type: ignore[return-value]
