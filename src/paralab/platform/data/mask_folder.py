"""A user's own segmentation data: ``path/images/<stem>.png|jpg`` with ``path/masks/<stem>.png``.

Why: the built-in canvases teach the mechanics; real work needs the user's own masks, and the
first thing that goes wrong with them is the folder (a missing mask, an RGB mask saved by an
image editor, a class id nobody listed). So every such problem is found before training, and
reported once, naming the file, what is wrong with it and the way out.

Masks are single-channel PNGs (mode L or P) of class ids; 255 marks pixels to ignore. Classes
come from ``data.classes`` (background first), else ``path/classes.txt`` (one per line). A
``path/test/{images,masks}`` folder is the test split; without one, a seeded ``test_fraction``
of the images is. Images must share one size unless ``data.image_size`` resizes them all
(bilinear; masks nearest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from paralab.errors import ConfigError, DatasetNotFoundError, ParalabError
from paralab.platform.bounds import bounded, limits
from paralab.platform.data.base import (
    IGNORE_INDEX,
    ClassificationData,
    DataConfig,
    build_segmentation_data,
)
from paralab.platform.data.image_files import UnreadableImage, open_image
from paralab.platform.data.registry import register_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_MODES = ("L", "P", "1", "I", "I;16")  # single channel


@dataclass
class MaskFolderConfig(DataConfig):
    name: str = "mask_folder"
    path: str = "???"
    classes: list[str] | None = field(default=None, metadata=limits(min_items=2))
    image_size: int | None = bounded(None, ge=1)  # null: images must all be the same size
    grayscale: bool = False
    test_fraction: float = bounded(0.2, gt=0, lt=1)  # unused with path/test/
    batch_size: int = bounded(32, ge=1)
    eval_batch_size: int = bounded(256, ge=1)


def read_classes(cfg: MaskFolderConfig, root: Path) -> list[str]:
    """``data.classes``, else ``root/classes.txt``; background first either way."""
    listed = root / "classes.txt"
    if cfg.classes is not None:
        classes, key = list(cfg.classes), "data.classes"
    elif listed.is_file():
        classes = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        key = str(listed)
    else:
        raise ConfigError(
            f"data.classes is required for mask_folder (no {listed} either): list the classes, "
            "mask value 0 first, e.g. data.classes=[background,cat,dog]"
        )
    if len(classes) < 2 or classes[0] != "background":
        raise ConfigError(
            f"{key}: {classes} must list 'background' (mask value 0) first, then at least one "
            "class, e.g. data.classes=[background,cat,dog]"
        )
    if len(classes) > IGNORE_INDEX:
        raise ConfigError(f"{key}: {len(classes)} classes; masks hold at most {IGNORE_INDEX}")
    return classes


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"data.path: {folder} is not a folder. Give a folder with images/<name>.png|jpg "
            "and masks/<name>.png sub-folders"
        )
    found: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() in suffixes:
            if file.stem in found:
                raise ParalabError(
                    f"data.path: {found[file.stem].name} and {file.name} in {folder} share the "
                    "name; keep one of them"
                )
            found[file.stem] = file
    return found


def _unmatched(stems: list[str], what: str, folder: Path, fix: str) -> ParalabError:
    names = ", ".join(stems[:5]) + (", ..." if len(stems) > 5 else "")
    return ParalabError(f"data.path: {len(stems)} {what} in {folder} ({names}). {fix}")


def pair_files(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) file pairs of ``folder/images`` and ``folder/masks``, matched by name."""
    images = _files(folder / "images", IMAGE_SUFFIXES)
    masks = _files(folder / "masks", (".png",))
    if not images:
        raise DatasetNotFoundError(
            f"data.path: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder / 'images'}"
        )
    no_mask = [images[s].name for s in images if s not in masks]
    if no_mask:
        raise _unmatched(
            no_mask, "image(s) without a mask", folder / "images",
            f"Add {folder / 'masks'}/<name>.png for each, or remove those images",
        )  # fmt: skip
    no_image = [masks[s].name for s in masks if s not in images]
    if no_image:
        raise _unmatched(
            no_image, "mask(s) without an image", folder / "masks",
            f"Add the images to {folder / 'images'}, or remove those masks",
        )  # fmt: skip
    return [(images[s], masks[s]) for s in images]


def _open(file: Path):
    try:
        return open_image(file)
    except UnreadableImage as why:
        raise ParalabError(
            f"data.path: cannot read {file} ({why}). Remove or replace that file"
        ) from None


def read_pair(
    image_file: Path, mask_file: Path, cfg: MaskFolderConfig, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image (C, H, W) and its mask (H, W), both uint8, checked and resized if asked."""
    from PIL import Image

    image, mask = _open(image_file), _open(mask_file)
    if mask.mode not in MASK_MODES:
        raise ParalabError(
            f"data.path: the mask {mask_file} has mode {mask.mode} ({len(mask.getbands())} "
            "channels); masks must be single-channel PNGs of class ids (mode L or P). "
            "Save it as one channel, e.g. a palette image whose indices are the class ids"
        )
    if image.size != mask.size:
        raise ParalabError(
            f"data.path: the mask {mask_file} is {mask.size[0]}x{mask.size[1]} (WxH) but its "
            f"image {image_file} is {image.size[0]}x{image.size[1]}; they must match"
        )
    image = image.convert("L" if cfg.grayscale else "RGB")
    if cfg.image_size is not None:
        size = (cfg.image_size, cfg.image_size)
        image, mask = image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
    values = np.asarray(mask).astype(np.int64)
    bad = np.unique(values[(values >= n_classes) & (values != IGNORE_INDEX)])
    if len(bad):
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise ParalabError(
            f"data.path: the mask {mask_file} holds value(s) {shown} outside the {n_classes} "
            f"classes (0..{n_classes - 1}; {IGNORE_INDEX} = ignore). List more classes in "
            "data.classes, or fix the mask"
        )
    pixels = np.array(image)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return pixels, values.astype(np.uint8)


def read_folder(
    folder: Path, cfg: MaskFolderConfig, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) and masks (N, H, W) of one folder, uint8."""
    images, masks, first = [], [], None
    for image_file, mask_file in pair_files(folder):
        image, mask = read_pair(image_file, mask_file, cfg, n_classes)
        if first is None:
            first = (image_file, image.shape[1:])
        elif image.shape[1:] != first[1]:
            raise ParalabError(
                f"data.path: {image_file} is {image.shape[2]}x{image.shape[1]} (WxH) but "
                f"{first[0]} is {first[1][1]}x{first[1][0]}. Set data.image_size=... to resize "
                "all images (bilinear) and masks (nearest) to one size"
            )
        images.append(torch.from_numpy(np.ascontiguousarray(image)))
        masks.append(torch.from_numpy(mask))
    return torch.stack(images), torch.stack(masks)


@register_dataset("mask_folder", config=MaskFolderConfig, task="segmentation")
def mask_folder(cfg: MaskFolderConfig) -> ClassificationData:
    """Your own masks: data.path=<folder with images/ and masks/>, data.classes=[background,..]."""
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"data.path: {root} is not a folder. Give a folder with images/<name>.png|jpg and "
            "masks/<name>.png sub-folders (and optionally test/images, test/masks)"
        )
    classes = read_classes(cfg, root)
    images, masks = read_folder(root, cfg, len(classes))
    if (root / "test").is_dir():
        test = read_folder(root / "test", cfg, len(classes))
        if test[0].shape[1:] != images.shape[1:]:
            raise ParalabError(
                f"data.path: test images are {tuple(test[0].shape[1:])} (C, H, W) but training "
                f"images are {tuple(images.shape[1:])}. Set data.image_size=... to resize both"
            )
        train = (images, masks)
    else:
        generator = torch.Generator().manual_seed(cfg.split_seed)
        order = torch.randperm(len(images), generator=generator)
        n_test = round(cfg.test_fraction * len(images))
        train = (images[order[n_test:]], masks[order[n_test:]])
        test = (images[order[:n_test]], masks[order[:n_test]])
    return build_segmentation_data(
        "mask_folder", classes, train, test, cfg, ignore_index=IGNORE_INDEX
    )
