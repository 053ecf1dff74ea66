"""What every model exposes, so a backbone can move between paradigms and carry any task's head.

The surface follows timm's (``forward_features``, ``forward_head``, ``forward_intermediates``,
``feature_info``, ``reset_classifier``) with one difference: our ``forward_features`` is already
pooled to a flat vector, because the classification, continual and federated code train on it.
Dense heads (segmentation) use ``forward_intermediates`` and ``feature_info`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

Indices = int | Sequence[int] | None


@dataclass(frozen=True)
class InputSpec:
    """What a model builder needs to know about the data."""

    in_channels: int
    image_size: tuple[int, int]
    num_classes: int


@dataclass
class ModelConfig:
    """Options every model has. ``init_from`` names a run folder or checkpoint whose backbone
    starts this model (any task, any paradigm: a rotation-pretrained backbone can start a
    continual, federated or segmentation run); null starts from random weights. The runner
    loads it once the task's model is built (:func:`paralab.platform.runner.build_model`)."""

    name: str = "cnn"
    init_from: str | None = None


def take_indices(num_stages: int, indices: Indices) -> list[int]:
    """timm's rule for picking stages: ``None`` all, an int ``n`` the last ``n``, a list those
    stages (negative counts from the end). Sorted, so maps always come shallow to deep."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices}: there are {num_stages} stages")
        return list(range(num_stages - indices, num_stages))
    take = sorted({i + num_stages if i < 0 else i for i in indices})
    if not take or take[0] < 0 or take[-1] >= num_stages:
        raise ValueError(f"indices={list(indices)}: stages are 0..{num_stages - 1}")
    return take


class Backbone(nn.Module):
    """A feature extractor: ``forward`` gives the pooled ``num_features`` vector, and
    ``forward_intermediates`` the NCHW map of each stage, described by ``feature_info``.

    ``feature_info[i]`` holds ``num_chs``, ``reduction`` (the stage's stride relative to the
    input: its map is ``H / reduction`` rounded down or up) and ``module`` (the submodule whose
    output it is, for hooks), which is all a U-Net or FCN decoder needs to be built.
    """

    num_features: int
    feature_info: list[dict]

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        raise NotImplementedError


class HasBackbone(nn.Module):
    """A model built on a :class:`Backbone` kept as ``self.backbone`` (every model: classifiers
    and dense models alike), exposing its surface so hooks, probes and weight transfer treat
    them the same."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = backbone.num_features

    @property
    def feature_info(self) -> list[dict]:
        """The backbone's stages, ``module`` named from this model (a fresh copy each time)."""
        return [
            {**info, "module": f"backbone.{info['module']}"} for info in self.backbone.feature_info
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        """The NCHW maps of the stages ``indices`` picks (default all; see ``take_indices``),
        shallow to deep; stages past the deepest one picked are not run."""
        return self.backbone.forward_intermediates(x, indices)


class Classifier(HasBackbone):
    """A ``Backbone`` followed by a linear ``head`` on its pooled features."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__(backbone)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` outputs (same device and dtype)."""
        old = self.head
        self.head = nn.Linear(self.num_features, num_classes).to(
            old.weight.device, old.weight.dtype
        )

    reset_classifier = reset_head  # timm's name
