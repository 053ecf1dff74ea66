"""What every classification model exposes, so a backbone can move between paradigms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What a model builder needs to know about the data."""

    in_channels: int
    image_size: tuple[int, int]
    num_classes: int


@dataclass
class ModelConfig:
    name: str = "cnn"


class Classifier(nn.Module):
    """A backbone (``forward_features``) followed by a linear ``head``.

    Subclasses build ``self.backbone`` returning a flat feature vector of ``num_features``.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` outputs (same device and dtype)."""
        old = self.head
        self.head = nn.Linear(self.num_features, num_classes).to(
            old.weight.device, old.weight.dtype
        )
