"""torchvision's ResNet-18 with a stem for small images (3x3 conv, stride 1, no max-pool)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from paralab.platform.models.base import Classifier, InputSpec, ModelConfig
from paralab.platform.models.registry import register_model


@dataclass
class ResNetConfig(ModelConfig):
    small_input_stem: bool = True


@register_model("resnet18", config=ResNetConfig)
def resnet18(cfg: ResNetConfig, spec: InputSpec) -> Classifier:
    """ResNet-18 (torchvision); the small-input stem suits 28-32 px images, as for CIFAR."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None)
    if cfg.small_input_stem:
        net.conv1 = nn.Conv2d(spec.in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(spec.in_channels, 64, 7, stride=2, padding=3, bias=False)
    num_features = net.fc.in_features
    net.fc = nn.Identity()
    return Classifier(net, num_features, spec.num_classes)
