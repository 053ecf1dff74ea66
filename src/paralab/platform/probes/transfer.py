"""Probing on another dataset than the run's (``probe.data``): its images shown as the run's were.

Why: a backbone is judged by how its features transfer, and a model trained on data without
one class per image (CLIP on captioned canvases, a segmenter, a detector) can only be probed on
a labelled set. Its image tower learned from inputs of one size, one channel count and one
normalisation, so the probe set's images are brought to that form rather than the model being
rebuilt for theirs (a ViT's position table, say, fits one size only).

How (:func:`fit_images`): channels are repeated (grey to colour) or averaged with the ITU-R
601 luma weights (colour to grey); ``fit="pad"`` centres each image on a black canvas of the
run's size (shrinking only images larger than it, keeping their aspect): a 28x28
Fashion-MNIST item in a 64x64 canvas at scale 1.0, as the canvas sets paste items (scales 0.75
to 1.5 by default); ``fit="resize"`` scales images to the run's size (bilinear, antialiased),
for runs trained on whole natural images. Pixels are then normalised with the run's training
statistics, the units the model's first layer was trained in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from paralab.errors import ConfigError
from paralab.platform.data.base import ClassificationData, InMemoryImages

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig

LUMA = (0.299, 0.587, 0.114)


def labelled_datasets() -> list[str]:
    """The registered datasets with one class per image."""
    from paralab.platform.data import DATASETS

    entries = DATASETS.entries()
    return [e.name for e in entries if e.meta.get("task", "classification") == "classification"]


def check_probe_data(name: str) -> None:
    """Refuse a ``probe.data`` that is not a registered classification dataset."""
    from paralab.platform.config import did_you_mean

    choices = labelled_datasets()
    if name not in choices:
        raise ConfigError(
            f"probe.data={name!r} is not a registered dataset of labelled images"
            f"{did_you_mean(name, choices)}. Choose one of: {', '.join(choices)}"
        )


def load_probe_data(config: ResolvedConfig, run_data: ClassificationData) -> ClassificationData:
    """The data the probes read: the run's own, or ``probe.data`` (its default options, as
    ``data=<name>`` gives them) fitted to the run's images (module docstring)."""
    from paralab.platform.config import validate_section
    from paralab.platform.data import DATASETS
    from paralab.platform.probes.overrides import group_section

    name = config.probe.data
    if name is None:
        return run_data
    check_probe_data(name)
    entry = DATASETS.get(name)
    values = group_section("data", name)
    data = entry.obj(validate_section("data", values, entry.config) if entry.config else values)
    channels, size = run_data.in_channels, run_data.image_size
    mean, std = run_data.train.mean.flatten(), run_data.train.std.flatten()

    def fit(split: InMemoryImages) -> InMemoryImages:
        images = fit_images(split.images, channels, size, config.probe.fit)
        return InMemoryImages(images, split.targets, mean, std)

    return ClassificationData(
        name=data.name, classes=data.classes,
        train=fit(data.train), val=fit(data.val), test=fit(data.test),
    )  # fmt: skip


def fit_images(
    images: torch.Tensor, channels: int, size: tuple[int, int], how: str = "pad"
) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, ``channels``, *``size``), as the module docstring says."""
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1 and images.shape[1] == 3:
            weights = torch.tensor(LUMA).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
        else:
            raise ConfigError(
                f"probe.data: its images have {images.shape[1]} channels and the run's model "
                f"takes {channels}; only grey and RGB convert. Probe on a dataset with "
                f"{channels} channels"
            )
    height, width = size
    h, w = images.shape[-2:]
    if how == "resize" or h > height or w > width:
        scale = 1.0 if how == "resize" else min(height / h, width / w)
        target = (height, width) if how == "resize" else (round(h * scale), round(w * scale))
        if target != (h, w):
            resized = F.interpolate(images.float(), target, mode="bilinear", antialias=True)
            images = resized.round().clamp(0, 255).to(torch.uint8)
        h, w = target
    top, left = (height - h) // 2, (width - w) // 2
    return F.pad(images, (left, width - w - left, top, height - h - top)).contiguous()
