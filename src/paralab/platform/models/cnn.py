"""A small VGG-style conv net with batch norm: the workhorse for 8-32 px images."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from paralab.errors import ConfigError
from paralab.platform.models.base import Classifier, InputSpec, ModelConfig
from paralab.platform.models.registry import register_model


@dataclass
class CNNConfig(ModelConfig):
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    convs_per_stage: int = 1
    dropout: float = 0.2


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@register_model("cnn", config=CNNConfig)
def cnn(cfg: CNNConfig, spec: InputSpec) -> Classifier:
    """Conv-BN-ReLU stages, each halving the resolution, then global average pooling."""
    if not cfg.channels:
        raise ConfigError("model.channels must list at least one stage width, e.g. [32, 64]")
    layers: list[nn.Module] = []
    cin = spec.in_channels
    size = min(spec.image_size)
    for cout in cfg.channels:
        for i in range(cfg.convs_per_stage):
            layers += conv_bn_relu(cin if i == 0 else cout, cout)
        cin = cout
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout)]
    return Classifier(nn.Sequential(*layers), cin, spec.num_classes)
