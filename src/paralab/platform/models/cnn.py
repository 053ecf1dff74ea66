"""A small VGG-style conv net with batch norm: the workhorse for 8-32 px images."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from paralab.platform.bounds import bounded, limits
from paralab.platform.models.base import (
    Backbone,
    Classifier,
    Indices,
    InputSpec,
    ModelConfig,
    take_indices,
)
from paralab.platform.models.registry import register_model


@dataclass
class CNNConfig(ModelConfig):
    channels: list[int] = field(
        default_factory=lambda: [32, 64, 128], metadata=limits(ge=1, min_items=1)
    )
    convs_per_stage: int = bounded(1, ge=1)
    dropout: float = bounded(0.2, ge=0, lt=1)


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class CNNBackbone(Backbone):
    """Stage i (Conv-BN-ReLU x ``convs_per_stage``), then a 2x2 max-pool while the image is still
    2 px or more, so 8 px digits take three halvings and deeper stages keep 1 px.

    A stage's feature map is taken before its pool, as timm does for VGG: strides 1, 2, 4, ...,
    a full-resolution first map for a U-Net's last skip, and maps that stay whole numbers of
    pixels one halving longer (28 px: 28, 14, 7 rather than 14, 7, 3).
    """

    def __init__(self, cfg: CNNConfig, spec: InputSpec) -> None:
        super().__init__()
        self.stages, self.pools, self.feature_info = nn.ModuleList(), nn.ModuleList(), []
        cin, size, reduction = spec.in_channels, min(spec.image_size), 1
        for i, cout in enumerate(cfg.channels):
            n = cfg.convs_per_stage
            layers = [m for j in range(n) for m in conv_bn_relu(cin if j == 0 else cout, cout)]
            self.stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=cout, reduction=reduction, module=f"stages.{i}"))
            if size >= 2:
                self.pools.append(nn.MaxPool2d(2))
                size, reduction = size // 2, reduction * 2
            else:
                self.pools.append(nn.Identity())
            cin = cout
        self.num_features = cin
        self.global_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage, pool in zip(self.stages, self.pools, strict=True):
            x = pool(stage(x))
        return self.global_pool(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        take, maps = take_indices(len(self.stages), indices), []
        for i in range(take[-1] + 1):
            x = self.stages[i](x)
            if i in take:
                maps.append(x)
            x = self.pools[i](x)
        return maps


@register_model("cnn", config=CNNConfig, task="classification")
def cnn(cfg: CNNConfig, spec: InputSpec) -> Classifier:
    """Conv-BN-ReLU stages, each halving the resolution, then global average pooling."""
    return Classifier(CNNBackbone(cfg, spec), spec.num_classes)
