"""The CNN of McMahan et al. (2017), "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (FedAvg): two 5x5 conv layers with 2x2 max-pooling, a dense layer, the head."""

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
class FedAvgCNNConfig(ModelConfig):
    channels: list[int] = field(
        default_factory=lambda: [32, 64], metadata=limits(ge=1, min_items=1)
    )
    hidden: int = bounded(512, ge=1)


class FedAvgCNNBackbone(Backbone):
    """Per entry of ``channels``: a 5x5 conv with 'same' padding (2, as the paper's TensorFlow
    code) and bias, ReLU, then a 2x2 max-pool while the image is still 2 px or more (8 px digits:
    8 -> 4 -> 2); then flatten and a ``hidden``-unit Linear-ReLU, whose output is the feature
    vector (``num_features = hidden``). No batch norm, no dropout, PyTorch's default init.

    Stages, as in ``cnn``: each conv stage's map before its pool (strides 1, 2, ...), and a last
    stage for the dense layer, its activation as an ``(N, hidden, 1, 1)`` map at reduction
    ``max(H, W)`` (as the ``mlp``'s layers), so that every backbone parameter lies before the
    last stage. A dense head would use only the conv stages.
    """

    def __init__(self, cfg: FedAvgCNNConfig, spec: InputSpec) -> None:
        super().__init__()
        self.stages, self.pools, self.feature_info = nn.ModuleList(), nn.ModuleList(), []
        cin, (h, w), reduction = spec.in_channels, spec.image_size, 1
        for i, cout in enumerate(cfg.channels):
            self.stages.append(
                nn.Sequential(nn.Conv2d(cin, cout, 5, padding=2), nn.ReLU(inplace=True))
            )
            self.feature_info.append(dict(num_chs=cout, reduction=reduction, module=f"stages.{i}"))
            if min(h, w) >= 2:
                self.pools.append(nn.MaxPool2d(2))
                h, w, reduction = h // 2, w // 2, reduction * 2
            else:
                self.pools.append(nn.Identity())
            cin = cout
        self.flatten = nn.Flatten()
        self.fc = nn.Sequential(nn.Linear(cin * h * w, cfg.hidden), nn.ReLU(inplace=True))
        self.feature_info.append(
            dict(num_chs=cfg.hidden, reduction=max(spec.image_size), module="fc")
        )
        self.num_features = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage, pool in zip(self.stages, self.pools, strict=True):
            x = pool(stage(x))
        return self.fc(self.flatten(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        take, maps = take_indices(len(self.feature_info), indices), []
        for i in range(min(take[-1] + 1, len(self.stages))):
            x = self.stages[i](x)
            if i in take:
                maps.append(x)
            x = self.pools[i](x)
        if take[-1] == len(self.stages):
            maps.append(self.fc(self.flatten(x))[:, :, None, None])
        return maps


@register_model("fedavg_cnn", config=FedAvgCNNConfig, task="classification")
def fedavg_cnn(cfg: FedAvgCNNConfig, spec: InputSpec) -> Classifier:
    """McMahan et al. (2017)'s FedAvg CNN: conv5x5(32)-pool-conv5x5(64)-pool-fc(512)-head,
    1,663,370 parameters on 1x28x28 with 10 classes, the paper's figure."""
    return Classifier(FedAvgCNNBackbone(cfg, spec), spec.num_classes)
