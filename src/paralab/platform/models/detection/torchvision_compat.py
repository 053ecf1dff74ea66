"""Every reach into torchvision's detection internals, in one place (checked on torchvision 0.29).

The detectors compose torchvision's public components rather than its model classes, which own a
backbone and resize images. What that composition relies on beyond documented arguments:

1. ``RegionProposalNetwork.forward(images, features, targets)`` returns ``(proposals, losses)``
   and ``RoIHeads.forward(features, proposals, image_shapes, targets)`` returns
   ``(detections, losses)``, each computing losses only when its ``training`` flag is True and
   detections (RoIHeads) only when it is False; the RPN also picks its proposal counts
   (``pre_nms_top_n``/``post_nms_top_n``: ``training`` or ``testing``) by that flag. Neither holds
   dropout or batch norm, so :func:`training_flag` may flip the flag to get losses in eval mode.
   Their loss keys are :data:`RPN_LOSSES` and :data:`ROI_LOSSES`; RoIHeads reserves label 0 for
   background.
2. ``ImageList(tensors, image_sizes)`` is all the RPN and RoIHeads read of the images.
3. ``FCOSHead``'s submodules ``classification_head`` and ``regression_head``, which
   :func:`fcos_head` rebuilds with a GroupNorm whose group count divides the width (torchvision
   hard-codes 32 groups), the latter's last conv ``bbox_reg`` (its bias starts at 1, see there);
   its ``box_coder`` (a ``BoxLinearCoder`` with ``decode(codes, anchors)`` over any leading
   dimensions); its outputs ``cls_logits``/``bbox_regression``/``bbox_ctrness`` (N, anchors, ·);
   ``compute_loss(targets, head_outputs, anchors, matched_idxs)``, -1 in ``matched_idxs`` for
   background, labels 0..C-1 (sigmoid classes, no background id).

:func:`problems` checks all of it on tiny inputs; ``tests/platform/test_detectors.py`` fails with
its message when a torchvision upgrade moves something.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torchvision.models.detection.image_list import ImageList

RPN_LOSSES = ("loss_objectness", "loss_rpn_box_reg")
ROI_LOSSES = ("loss_classifier", "loss_box_reg")
FCOS_OUTPUTS = ("cls_logits", "bbox_regression", "bbox_ctrness")


def image_list(images: torch.Tensor) -> ImageList:
    """``images`` (N, C, H, W) as torchvision's ``ImageList``, every image its full size."""
    from torchvision.models.detection.image_list import ImageList

    size = (int(images.shape[-2]), int(images.shape[-1]))
    return ImageList(images, [size] * len(images))


@contextmanager
def training_flag(mode: bool, *modules: nn.Module) -> Iterator[None]:
    """Set ``training`` on ``modules`` and their children for the block, then restore each."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.train(mode)
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def fcos_head(channels: int, num_classes: int, convs: int) -> nn.Module:
    """torchvision's ``FCOSHead`` (one anchor per location), its towers ``convs`` deep, with
    GroupNorm in ``gcd(32, channels)`` groups so any pyramid width works."""
    from torchvision.models.detection.fcos import (
        FCOSClassificationHead,
        FCOSHead,
        FCOSRegressionHead,
    )

    head = FCOSHead(channels, 1, num_classes, num_convs=0)  # towers rebuilt below
    norm = partial(nn.GroupNorm, math.gcd(32, channels))
    head.classification_head = FCOSClassificationHead(
        channels, 1, num_classes, convs, norm_layer=norm
    )
    head.regression_head = FCOSRegressionHead(channels, 1, convs, norm_layer=norm)
    # Its side distances pass a ReLU: from a zero bias, one side's channel can go negative
    # everywhere early on and never recover (seen in the overfit test); start them at one stride.
    nn.init.constant_(head.regression_head.bbox_reg.bias, 1.0)
    return head


def problems() -> list[str]:
    """What of the above no longer holds in the installed torchvision (empty when all does)."""
    import torchvision
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    found: list[str] = []
    want = {
        "RegionProposalNetwork.forward": (RegionProposalNetwork, ["images", "features", "targets"]),
        "RoIHeads.forward": (RoIHeads, ["features", "proposals", "image_shapes", "targets"]),
    }
    for name, (cls, params) in want.items():
        got = list(inspect.signature(cls.forward).parameters)[1:]
        if got != params:
            found.append(f"{name} takes {got}, expected {params}")
    try:
        torch.manual_seed(0)
        images = image_list(torch.zeros(2, 1, 32, 32))
        features = OrderedDict([("0", torch.randn(2, 8, 8, 8))])
        targets = [
            {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        ]
        top = {"training": 20, "testing": 10}
        rpn = RegionProposalNetwork(
            AnchorGenerator(((16,),), ((1.0,),)), RPNHead(8, 1), 0.7, 0.3, 16, 0.5, top, top, 0.7
        )
        roi = RoIHeads(
            MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(8 * 49, 16), FastRCNNPredictor(16, 3),
            0.5, 0.5, 16, 0.25, None, 0.0, 0.5, 10,
        )  # fmt: skip
        rpn.eval(), roi.eval()
        with training_flag(True, rpn, roi):
            proposals, rpn_losses = rpn(images, features, targets)
            _, roi_losses = roi(features, proposals, images.image_sizes, targets)
        if (rpn.training, roi.training) != (False, False):
            found.append("training_flag did not restore the modules' eval mode")
        if tuple(rpn_losses) != RPN_LOSSES or tuple(roi_losses) != ROI_LOSSES:
            found.append(f"losses in training mode are {[*rpn_losses, *roi_losses]}")
        proposals, rpn_losses = rpn(images, features)
        detections, roi_losses = roi(features, proposals, images.image_sizes)
        if rpn_losses or roi_losses or len(detections) != 2:
            found.append("RPN/RoIHeads in eval mode give losses, or no detections per image")
        elif set(detections[0]) != {"boxes", "scores", "labels"}:
            found.append(f"RoIHeads' detections hold {sorted(detections[0])}")
        head = fcos_head(8, 3, 1)
        outputs = head([features["0"]])
        if tuple(outputs) != FCOS_OUTPUTS:
            found.append(f"FCOSHead outputs {list(outputs)}, expected {list(FCOS_OUTPUTS)}")
        anchors = [torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(64, 1)] * 2
        matched = [torch.zeros(64, dtype=torch.long), torch.full((64,), -1)]
        losses = head.compute_loss(targets, outputs, anchors, matched)
        head.box_coder.decode(outputs["bbox_regression"], torch.stack(anchors))
        if not all(torch.isfinite(v) for v in losses.values()):
            found.append("FCOSHead.compute_loss gives non-finite losses")
    except Exception as error:  # any failure is the news to report
        found.append(f"{type(error).__name__}: {error}")
    return [f"torchvision {torchvision.__version__}: {p}" for p in found]
