"""Photos: a built-in RGB classification set cut from the real photos that ship with the wheels.

Why: the colour pretext tasks (colorization; SimCLR's colour jitter) need colour images, and
the colour sets paralab loads by name (CIFAR) are downloads. scikit-learn ships two photos
(``china.jpg``, a temple, and ``flower.jpg``, both 427x640) and matplotlib one
(``grace_hopper.jpg``, 600x512); crops of them make a small colour set with no download, the
same bytes for the same seed, and a class per photo: the label of a crop is the photo it comes
from.

How: each crop has a seeded random side of ``round(image_size * scale)`` photo pixels, ``scale``
uniform in [``scale_min``, ``scale_max``] (capped at the region's size), and a seeded random
position; it is resized to ``image_size`` by averaging (``roi_align`` with adaptive sampling: an
antialiased resize of all the crops of a photo in one call). Train crops come from the left
``1 - test_fraction`` of each photo's columns, test crops from the right ``test_fraction``, so a
test crop never shares a pixel with a training crop. Crops are spread evenly over the photos.

Speed: 3,000 train and 600 test 32x32 crops (the defaults) take 0.4-0.6 s on one torch thread
of a 2-core machine whose other core was busy, nearly all of it in ``roi_align``; decoding the
three JPEGs, once per process, takes 0.02 s once scikit-learn's loader is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData, DataConfig, build_classification_data
from paralab.platform.data.registry import register_dataset

#: The photos, in class order: (class name, where it ships, file name).
PHOTOS = (
    ("china", "sklearn", "china.jpg"),
    ("flower", "sklearn", "flower.jpg"),
    ("grace_hopper", "matplotlib", "grace_hopper.jpg"),
)


@dataclass
class PhotosConfig(DataConfig):
    name: str = "photos"
    train_images: int = bounded(3_000, ge=1)
    test_images: int = bounded(600, ge=1)
    image_size: int = bounded(32, ge=2, le=256)
    scale_min: float = bounded(1.0, gt=0, le=16)  # a crop's side: image_size * scale photo px
    scale_max: float = bounded(3.0, gt=0, le=16)
    test_fraction: float = bounded(0.2, gt=0, lt=1)  # the right-hand share of each photo's columns
    seed: int = bounded(0, ge=0)
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int = bounded(256, ge=1)


@lru_cache(maxsize=1)
def load_photos() -> tuple[torch.Tensor, ...]:
    """The photos as uint8 (3, H, W) tensors, in :data:`PHOTOS` order (decoded once)."""
    return tuple(torch.from_numpy(_read(where, file)).permute(2, 0, 1) for _, where, file in PHOTOS)


def _read(where: str, file: str) -> np.ndarray:
    if where == "sklearn":
        from sklearn.datasets import load_sample_image

        return np.array(load_sample_image(file))
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data(file, asfileobj=False)) as image:
        return np.asarray(image.convert("RGB")).copy()


def check_photos_config(cfg: PhotosConfig) -> None:
    """The check that involves two options at once (each option's range is declared)."""
    if cfg.scale_min > cfg.scale_max:
        raise ConfigError(
            f"data.scale_min={cfg.scale_min} is above data.scale_max={cfg.scale_max}: set "
            f"data.scale_max={cfg.scale_min} or more, or data.scale_min={cfg.scale_max} or less"
        )


def column_range(width: int, test_fraction: float, split: str) -> tuple[int, int]:
    """The columns ``[start, stop)`` of a photo that ``split`` ("train" or "test") crops from."""
    cut = round(width * (1 - test_fraction))
    cut = min(max(cut, 1), width - 1)
    return (0, cut) if split == "train" else (cut, width)


def crop_boxes(
    n: int, height: int, columns: tuple[int, int], cfg: PhotosConfig, generator: torch.Generator
) -> torch.Tensor:
    """``n`` seeded square boxes (x1, y1, x2, y2) inside rows [0, height) and ``columns``."""
    start, stop = columns
    largest = min(stop - start, height)
    scale = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.rand(n, generator=generator)
    side = (cfg.image_size * scale.double()).round().long().clamp(1, largest)
    left = start + (
        torch.rand(n, generator=generator, dtype=torch.double) * (stop - start - side + 1)
    )
    top = torch.rand(n, generator=generator, dtype=torch.double) * (height - side + 1)
    left, top = left.long(), top.long()
    return torch.stack([left, top, left + side, top + side], 1).double()


def cut_crops(photo: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The ``boxes`` of ``photo`` (3, H, W) uint8, each resized to ``size`` px: (K, 3, s, s)."""
    from torchvision.ops import roi_align

    rois = torch.cat([torch.zeros(len(boxes), 1), boxes.float()], 1)
    crops = roi_align(photo[None].float(), rois, size, sampling_ratio=-1, aligned=True)
    return crops.round_().clamp_(0, 255).to(torch.uint8)


def make_crops(
    photos: tuple[torch.Tensor, ...], n: int, split: str, cfg: PhotosConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` crops of ``split``'s region of the photos and their labels (the photo's index),
    spread evenly over the photos in a seeded order; the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(photos))[torch.randperm(n, generator=generator)]
    images = torch.empty(n, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    for label, photo in enumerate(photos):
        where = (labels == label).nonzero().flatten()
        height, width = photo.shape[1:]
        columns = column_range(width, cfg.test_fraction, split)
        boxes = crop_boxes(len(where), height, columns, cfg, generator)
        if len(where):
            images[where] = cut_crops(photo, boxes, cfg.image_size)
    return images, labels


@register_dataset("photos", config=PhotosConfig, task="classification")
def photos(cfg: PhotosConfig) -> ClassificationData:
    """Crops of 3 real photos (scikit-learn's and matplotlib's), a class per photo, RGB, no
    download: colour images for the colour pretext tasks."""
    check_photos_config(cfg)
    sources = load_photos()
    train = make_crops(sources, cfg.train_images, "train", cfg, seed=2 * cfg.seed)
    test = make_crops(sources, cfg.test_images, "test", cfg, seed=2 * cfg.seed + 1)
    classes = [name for name, _, _ in PHOTOS]
    return build_classification_data("photos", classes, train, test, cfg)
