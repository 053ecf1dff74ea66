"""A user's own images in class folders (``root/<class>/<image>``), resized and held in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from paralab.errors import ConfigError, DatasetNotFoundError, ParalabError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData, DataConfig, build_classification_data
from paralab.platform.data.registry import register_dataset


@dataclass
class ImageFolderConfig(DataConfig):
    path: str = "???"
    image_size: int = bounded(32, ge=1)
    grayscale: bool = False
    test_fraction: float = bounded(0.2, gt=0, lt=1)  # unused with test_path
    test_path: str | None = None


def _load(path: Path, cfg: ImageFolderConfig, classes: list[str] | None = None):
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise DatasetNotFoundError(
            f"data.path: {path} is not a folder. "
            "Give a folder with one sub-folder of images per class"
        )
    steps = [T.Resize((cfg.image_size, cfg.image_size))]
    if cfg.grayscale:
        steps.append(T.Grayscale())
    steps += [T.PILToTensor()]
    try:
        folder = ImageFolder(str(path), transform=T.Compose(steps))
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"data.path: {error}") from None
    key = "data.path" if classes is None else "data.test_path"
    if classes is None and len(folder.classes) < 2:
        raise ConfigError(
            f"data.path: {path} holds {len(folder.classes)} class folder(s) {folder.classes}; "
            "classification needs at least 2. Give a folder with one sub-folder of images per class"
        )
    if classes is not None and folder.classes != classes:
        raise ConfigError(f"{key}: its classes {folder.classes} differ from data.path's {classes}")
    return folder.classes, _read_images(folder, key), torch.tensor(folder.targets)


def _read_images(folder, key: str) -> torch.Tensor:
    """Every image of the folder, or one error naming the file that cannot be read."""
    images = []
    for i, (file, _) in enumerate(folder.samples):
        try:
            images.append(folder[i][0])
        except (OSError, SyntaxError, ValueError) as error:  # PIL: unreadable or truncated
            from PIL import UnidentifiedImageError

            why = (
                "not an image PIL can read" if isinstance(error, UnidentifiedImageError) else error
            )
            raise ParalabError(
                f"{key}: cannot read the image {file} ({why}). Remove or replace that file"
            ) from None
    return torch.stack(images)


@register_dataset("image_folder", config=ImageFolderConfig, task="classification")
def image_folder(cfg: ImageFolderConfig) -> ClassificationData:
    """Your own images: data.path=<folder with one sub-folder per class>."""
    classes, images, targets = _load(Path(cfg.path).expanduser(), cfg)
    if cfg.test_path:
        _, test_images, test_targets = _load(Path(cfg.test_path).expanduser(), cfg, classes)
        train = (images, targets)
    else:
        order = torch.randperm(
            len(targets), generator=torch.Generator().manual_seed(cfg.split_seed)
        )
        n_test = round(cfg.test_fraction * len(targets))
        test_idx, train_idx = order[:n_test], order[n_test:]
        train = (images[train_idx], targets[train_idx])
        test_images, test_targets = images[test_idx], targets[test_idx]
    return build_classification_data(
        "image_folder", classes, train, (test_images, test_targets), cfg
    )
