"""A multilayer perceptron on the flattened image: the MLP of the continual-learning and
federated-learning papers (van de Ven & Tolias 2019; McMahan et al. 2017's "2NN")."""

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
class MLPConfig(ModelConfig):
    hidden: list[int] = field(
        default_factory=lambda: [400, 400], metadata=limits(ge=1, min_items=1)
    )
    dropout: float = bounded(0.0, ge=0, lt=1)


class MLPBackbone(Backbone):
    """Flatten, then one Linear-ReLU(-Dropout) block per entry of ``hidden``; the pooled
    feature vector is the last block's output (``num_features = hidden[-1]``).

    One stage per hidden layer, its activation as an ``(N, units, 1, 1)`` map with
    ``reduction`` equal to the input size (``max(H, W)``), so the contract's rule
    (``H / reduction`` rounded down or up) holds for any image, square or not. These maps have
    no spatial extent: a dense (segmentation) head makes no sense on this backbone, and the maps
    are there so feature distillation, probes and hooks see every model the same way.
    """

    def __init__(self, cfg: MLPConfig, spec: InputSpec) -> None:
        super().__init__()
        h, w = spec.image_size
        fin, reduction = spec.in_channels * h * w, max(h, w)
        self.flatten = nn.Flatten()
        self.layers, self.feature_info = nn.ModuleList(), []
        for i, units in enumerate(cfg.hidden):
            self.layers.append(
                nn.Sequential(nn.Linear(fin, units), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
            )
            self.feature_info.append(dict(num_chs=units, reduction=reduction, module=f"layers.{i}"))
            fin = units
        self.num_features = fin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        take, maps = take_indices(len(self.layers), indices), []
        x = self.flatten(x)
        for i in range(take[-1] + 1):
            x = self.layers[i](x)
            if i in take:
                maps.append(x[:, :, None, None])
        return maps


@register_model("mlp", config=MLPConfig, task="classification")
def mlp(cfg: MLPConfig, spec: InputSpec) -> Classifier:
    """MLP on flattened pixels: van de Ven & Tolias (2019) "Three scenarios for continual
    learning" (default, ``model.hidden=[400,400]``: 478,410 parameters on 1x28x28 with 10
    classes); ``model.hidden=[200,200]`` is the "2NN" of McMahan et al. (2017) (199,210)."""
    return Classifier(MLPBackbone(cfg, spec), spec.num_classes)
