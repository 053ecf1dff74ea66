"""FCN (Long et al. 2015) on any registered backbone, as torchvision builds it: ``FCNHead``
(3x3 conv to a quarter of the channels, BN, ReLU, dropout 0.1, 1x1 conv to classes) on the
backbone's deepest map, then bilinear upsampling to the input size.

Why this and not torchvision's ``fcn_resnet50``: those builders fetch ImageNet weights by default
and own their ResNet; here the head sits on whichever backbone ``model.backbone`` names (its
trained weights included), and no builder that downloads is called. The simplest dense head: the
baseline a U-Net's skips or a Segmenter's attention should beat.

"Deepest" is the deepest stage with spatial extent (``fedavg_cnn``'s flat fc stage is skipped;
stages after the one used are not run, so their parameters get no gradient).

Cost (3x64x64, 11 classes, forward+backward of batch 32 on the 2-core CPU; command in
:mod:`.dense`): on resnet18 (the default) 11,760,331 parameters, 2.5 s; on cnn 130,763, 0.11 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from paralab.errors import ConfigError
from paralab.platform.models.base import Backbone, InputSpec
from paralab.platform.models.dense import (
    SECTION,
    DenseConfig,
    DenseModel,
    build_backbone,
    deepest_spatial_stage,
    finish,
)
from paralab.platform.models.registry import register_model


@dataclass
class FCNConfig(DenseConfig):
    name: str = "fcn"
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet18"})


class FCN(DenseModel):
    """Backbone's deepest spatial map -> torchvision ``FCNHead`` -> bilinear to input size."""

    def __init__(self, backbone: Backbone, spec: InputSpec) -> None:
        from torchvision.models.segmentation.fcn import FCNHead

        super().__init__(backbone)
        self.stage = deepest_spatial_stage(backbone, spec)
        channels = backbone.feature_info[self.stage]["num_chs"]
        if channels < 4:
            raise ConfigError(
                f"{SECTION}: the FCN head needs a deepest map of 4 or more channels (it narrows "
                f"to a quarter), this backbone's has {channels}; widen the backbone's last stage"
            )
        self.head = FCNHead(channels, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (fmap,) = self.backbone.forward_intermediates(x, [self.stage])
        return F.interpolate(self.head(fmap), x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("fcn", config=FCNConfig, task="segmentation")
def fcn(cfg: FCNConfig, spec: InputSpec) -> FCN:
    """FCN: torchvision's FCNHead on any backbone's deepest map (default resnet18)."""
    return finish(FCN(build_backbone(cfg.backbone, spec), spec), cfg, spec)
