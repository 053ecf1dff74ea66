"""Rotation prediction (Gidaris et al. 2018): which of four right-angle turns was applied.

To tell an upright digit or car from one lying on its side, a network has to find the object
and its parts and their usual orientation, which is what a downstream classifier needs too;
the four turns are exact (``torch.rot90``: no interpolation, no black corners) so no low-level
artefact gives the angle away. As in the paper, every image is shown in all four rotations in
the same batch (N images make 4N views, view block ``r`` holding turn ``r`` of every image),
which trains better than one random turn per image: the network compares an image with itself.

Only square images are taken: a quarter turn of an H x W image is W x H, which neither stacks
with the upright views nor fits a backbone built for H x W. Keeping only the 0 and 180 degree
turns of non-square images would halve the problem silently, so :meth:`Rotation.check` refuses
them instead and says how to get square images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.tasks.base import Batch, TaskConfig, register_task
from paralab.platform.tasks.pretext.base import PretextTask

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData

TURNS = 4  # 0, 90, 180 and 270 degrees


@dataclass
class RotationConfig(TaskConfig):
    name: str = "rotation"


def rotate_all(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four turns of ``images`` (N, C, H, H) as 4N views, block ``r`` turned ``r`` quarter
    turns counter-clockwise, and the turn of each view (``r`` repeated N times per block)."""
    views = torch.cat([torch.rot90(images, r, dims=(2, 3)) for r in range(TURNS)])
    turns = torch.arange(TURNS, device=images.device).repeat_interleave(len(images))
    return views, turns


@register_task("rotation", config=RotationConfig)
class Rotation(PretextTask):
    """Self-supervised: predict which of 4 right-angle turns an image was given (4 views each);
    k-NN accuracy of the features (test/knn_acc) as the headline."""

    @property
    def num_outputs(self) -> int:
        return TURNS

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:
        super().check(config, data)
        height, width = data.image_size
        if height != width:
            raise ConfigError(
                f"task=rotation turns images by 90 degrees, which needs square images; "
                f"data={config.data.name} gives {height}x{width}. Resize the images to a square "
                f"(image_folder: data.image_size=<side>) or choose another task"
            )

    def make(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rotate_all(images)

    def pretext_names(self) -> list[str]:
        return [f"{90 * r}°" for r in range(TURNS)]

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        """The first two images in all four turns, with the true and predicted turn (the
        first views alone would all be upright)."""
        from paralab.platform.tasks.pictures import draw_classification

        inputs, targets = self.unpack(batch)
        n = len(inputs.plain)
        picked = torch.tensor([r * n + i for i in range(min(2, n)) for r in range(TURNS)])
        views = inputs.views[picked.to(inputs.views.device)]
        with torch.no_grad():
            predicted = model.forward_head(model.forward_features(views)).argmax(1)
        turns = targets.pretext[picked.to(targets.pretext.device)]
        draw_classification(views, turns, predicted, self.pretext_names(), path)
