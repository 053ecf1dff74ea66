"""A user's own images in class folders (``root/<class>/<image>``), resized and held in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from paralab.errors import ConfigError, DatasetNotFoundError
from paralab.platform.data.base import ClassificationData, DataConfig, build_classification_data
from paralab.platform.data.registry import register_dataset


@dataclass
class ImageFolderConfig(DataConfig):
    path: str = "???"
    image_size: int = 32
    grayscale: bool = False
    test_fraction: float = 0.2
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
    if classes is not None and folder.classes != classes:
        raise ConfigError(
            f"data.test_path: its classes {folder.classes} differ from data.path's {classes}"
        )
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    return folder.classes, images, torch.tensor(folder.targets)


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
