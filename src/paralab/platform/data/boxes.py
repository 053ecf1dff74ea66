"""Images with object boxes: detection targets as one padded tensor, so every paradigm's data path
(subsets, batches, device moves, Avalanche's collate, federated partitions) carries them as it
carries class labels and masks.

Why a padded tensor rather than a list of dicts per image (torchvision's format): the continual
scenarios, the federated partitions and the in-memory fast path all index, stack and move
``targets`` as one tensor. An image's objects are the rows of ``targets[i]`` (K, 5): ``label,
x1, y1, x2, y2`` in pixels (corners, x right, y down; the box covers ``x1 <= x < x2``), and rows
with label -1 are padding. K is the most objects any image of the set has. The detection task
turns a batch into torchvision's list of ``{"boxes", "labels"}`` dicts (:func:`box_dicts`).

Boxes are checked where a dataset is built (:func:`check_boxes`): a NaN coordinate, a box of
zero or negative size, or one outside its image is an error naming the image and the box;
images with no objects are kept (they teach what background looks like, as in COCO).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from paralab.errors import ConfigError
from paralab.platform.data.base import ClassificationData, DataConfig, InMemoryImages, build_splits

PAD = -1.0  # the label of a padding row


class BoxImages(InMemoryImages):
    """Images (N, C, H, W) uint8 with box targets (N, K, 5) float32 (module docstring).

    ``hflip`` flips boxes with their images; ``crop`` is refused where the data is built (a
    crop would cut boxes)."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: Sequence[str] = (),
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if targets.ndim != 3 or targets.shape[0] != images.shape[0] or targets.shape[2] != 5:
            raise ValueError(
                f"box targets of shape {tuple(targets.shape)} do not fit images of shape "
                f"{tuple(images.shape)}: they must be (N, K, 5) rows of label, x1, y1, x2, y2"
            )
        self.images = images
        self.targets = targets.float()
        self.has_masks = False
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)
        self.augment = tuple(augment)

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[index].float() / 255.0 - self.mean) / self.std
        boxes = self.targets[index].clone()
        if "hflip" in self.augment:
            flip = torch.rand(len(index)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            width = self.images.shape[-1]
            flipped = boxes.clone()
            flipped[..., 1], flipped[..., 3] = width - boxes[..., 3], width - boxes[..., 1]
            real = boxes[..., :1] >= 0
            boxes = torch.where(flip.view(-1, 1, 1) & real, flipped, boxes)
        return x, boxes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._batch(torch.tensor([index]))
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch(torch.as_tensor(indices, dtype=torch.long))

    def subset(self, indices: Sequence[int] | torch.Tensor, augment: bool = True) -> BoxImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return BoxImages(
            self.images[index],
            self.targets[index],
            self.mean.flatten(),
            self.std.flatten(),
            self.augment if augment else (),
        )


def pad_boxes(per_image: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image (T_i, 5) rows of label, x1, y1, x2, y2 as one (N, K, 5) tensor, K = max T_i
    (at least 1), padded with label -1."""
    k = max([1, *(len(t) for t in per_image)])
    out = torch.zeros(len(per_image), k, 5)
    out[..., 0] = PAD
    for i, rows in enumerate(per_image):
        if len(rows):
            out[i, : len(rows)] = torch.as_tensor(rows, dtype=torch.float32)
    return out


def box_dicts(targets: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """A batch's padded targets (B, K, 5) as torchvision's per-image ``{"boxes": (T, 4) float,
    "labels": (T,) long}``, padding dropped."""
    out = []
    for rows in targets:
        real = rows[rows[:, 0] >= 0]
        out.append({"boxes": real[:, 1:].contiguous(), "labels": real[:, 0].long()})
    return out


def keep_classes(targets: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``targets`` with the boxes of every class not in ``classes`` made padding (their objects
    stay in the pixels, unlabelled: class-incremental detection, Shmelkov et al. 2017)."""
    out = targets.clone()
    keep = torch.isin(out[..., 0].long(), torch.as_tensor(list(classes), dtype=torch.long))
    out[..., 0] = torch.where(keep, out[..., 0], torch.full_like(out[..., 0], PAD))
    return out


def showing(targets: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Which images (N,) bool have at least one box of ``classes``."""
    wanted = torch.as_tensor(list(classes), dtype=torch.long)
    return torch.isin(targets[..., 0].long(), wanted).any(1)


def check_boxes(name: str, split: str, targets: torch.Tensor, size: tuple[int, int], classes: int):
    """Refuse boxes a detector cannot learn from or be scored on (module docstring)."""
    real = targets[..., 0] >= 0
    where = real.nonzero()
    rows = targets[real]
    h, w = size

    def fail(problem: torch.Tensor, what: str, fix: str) -> None:
        if problem.any():
            i = int(problem.nonzero()[0, 0])
            image, box = int(where[i, 0]), [round(v, 2) for v in rows[i].tolist()]
            raise ConfigError(
                f"{name} {split}: the image at index {image} has a box {box} "
                f"(label, x1, y1, x2, y2) {what}. "
                f"{fix}; {int(problem.sum())} box(es) in this split have the problem"
            )

    fail(rows.isnan().any(1), "with a NaN value", "Fix or drop that annotation")
    fail(rows[:, 0] != rows[:, 0].round(), "whose label is not a whole number", "Use class ids")
    fail(rows[:, 0] >= classes, f"whose label is not a class id (0..{classes - 1})",
         "Map every category to one of the dataset's classes")  # fmt: skip
    fail((rows[:, 3] <= rows[:, 1]) | (rows[:, 4] <= rows[:, 2]), "of zero or negative size",
         "Boxes need x2 > x1 and y2 > y1; drop degenerate annotations")  # fmt: skip
    outside = (rows[:, 1] < 0) | (rows[:, 2] < 0) | (rows[:, 3] > w) | (rows[:, 4] > h)
    fail(outside, f"outside the {w}x{h} image", "Clip the box to the image or fix it")


def build_detection_data(
    name: str,
    classes: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: DataConfig,
) -> ClassificationData:
    """Images (uint8 NCHW) with padded box targets (N, K, 5): checked (:func:`check_boxes`),
    a seeded validation split taken off the training images, every split a :class:`BoxImages`.
    ``data.label_fraction`` is refused (a class-balanced subset has no meaning per box)."""
    if "crop" in cfg.augment:
        raise ConfigError(
            f"data.augment=[crop]: {name} holds boxes, which a crop would cut. "
            "Use data.augment=[hflip] or data.augment=[]"
        )
    if cfg.label_fraction is not None:
        raise ConfigError(
            f"data.label_fraction={cfg.label_fraction}: {name} is a detection set, whose labels "
            "are boxes, not one class per image. Set data.label_fraction=null, or "
            "data.train_limit=<images> to train on fewer images"
        )
    for split, (images, targets) in (("train", train), ("test", test)):
        check_boxes(name, split, targets, tuple(images.shape[-2:]), len(classes))
    data = build_splits(name, classes, train, test, cfg, split_type=BoxImages)
    data.task = "detection"
    return data
