"""What the loaders of users' own image files share: their image options and reading an image.

Why one module: ``coco`` and ``caption_folder`` take the same image options (the size every
image is resized to, grey or RGB, the test share when no test files are given), and they and
``mask_folder`` read files the same way (PIL, fully loaded so a truncated file fails here, not
in a batch later). Each loader still words its own message: it knows which key and which row
named the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paralab.platform.bounds import bounded, limits
from paralab.platform.data.base import DataConfig


def _two(value: list[int], key: str) -> str | None:
    return None if len(value) == 2 else f"must be [height, width]. Set e.g. {key}=[64,64]"


@dataclass
class ImageFilesConfig(DataConfig):
    """``image_size``: every image is resized to it (bilinear); ``channels``: 1 grey, 3 RGB;
    ``test_fraction``: the seeded share of the images that is the test split when no test
    files are given."""

    test_fraction: float = bounded(0.2, gt=0, lt=1)
    image_size: list[int] = field(
        default_factory=lambda: [64, 64], metadata=limits(ge=1, check=_two)
    )
    channels: int = bounded(3, choices=(1, 3))  # 1: grey, 3: RGB


class UnreadableImage(Exception):
    """A file PIL cannot read as an image; ``str()`` says why."""


def open_image(file: Path) -> Any:
    """The PIL image in ``file``, fully loaded; :class:`UnreadableImage` if it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(file)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:  # PIL: unreadable or truncated
        why = "not an image PIL can read" if isinstance(error, UnidentifiedImageError) else error
        raise UnreadableImage(str(why)) from None
    return image


def image_tensor(image: Any, channels: int, size: list[int]) -> torch.Tensor:
    """A PIL image as (channels, height, width) uint8, resized (bilinear) to ``size``."""
    from PIL import Image

    height, width = size
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.array(image.resize((width, height), Image.BILINEAR))
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
