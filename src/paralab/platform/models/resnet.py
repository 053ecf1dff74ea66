"""torchvision's ResNet-18 with a stem for small images (3x3 conv, stride 1, no max-pool)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
class ResNetConfig(ModelConfig):
    small_input_stem: bool = True


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its ``fc``, under torchvision's module names (so its state
    dict is torchvision's). Five stages, as in timm: the stem (before the max-pool), then
    layer1..layer4; strides 1, 1, 2, 4, 8 with the small-input stem, 2, 4, 8, 16, 32 without."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4,
        )  # fmt: skip
        self.avgpool = net.avgpool
        self.num_features = net.fc.in_features
        stem = self.conv1.stride[0]
        pooled = stem if isinstance(self.maxpool, nn.Identity) else stem * 2
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=m)
            for c, r, m in zip(
                (64, 64, 128, 256, 512),  # ResNet-18's widths
                (stem, pooled, pooled * 2, pooled * 4, pooled * 8),
                ("relu", "layer1", "layer2", "layer3", "layer4"),
                strict=True,
            )
        ]

    def stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The five stages in order; the max-pool opens stage 1, so the stem's map is taken
        before it (timm's ``act1``)."""
        stem = lambda x: self.relu(self.bn1(self.conv1(x)))  # noqa: E731
        layer1 = lambda x: self.layer1(self.maxpool(x))  # noqa: E731
        return [stem, layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages():
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        take, maps = take_indices(len(self.feature_info), indices), []
        for i, stage in enumerate(self.stages()[: take[-1] + 1]):
            x = stage(x)
            if i in take:
                maps.append(x)
        return maps


@register_model("resnet18", config=ResNetConfig, task="classification")
def resnet18(cfg: ResNetConfig, spec: InputSpec) -> Classifier:
    """ResNet-18 (torchvision); the small-input stem suits 28-32 px images, as for CIFAR."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None)
    if cfg.small_input_stem:
        net.conv1 = nn.Conv2d(spec.in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(spec.in_channels, 64, 7, stride=2, padding=3, bias=False)
    return Classifier(ResNetBackbone(net), spec.num_classes)
