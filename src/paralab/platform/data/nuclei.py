"""Nuclei: a real detection set, tiles of one annotated fluorescence microscopy image.

Why: no real annotated detection set can be had offline (DATA.md) except the sample that ships
in PyPI's ``stardist`` wheel: a 512x512 image of stained nuclei with an instance mask of 125 of
them, drawn by people. Its files are read from the installed folder (``pip install --no-deps
stardist``; the package is never imported, it would need TensorFlow), or from ``data.root``,
a folder holding ``img2d.tif`` and ``mask2d.tif`` (a user's own image and instance mask).

How: the image (16-bit in the wheel, 0-235) is scaled to uint8 by its 1st and 99.8th
percentiles, as stardist's ``normalize`` does (label-free, over the whole image), one channel.
Training tiles of ``tile_size`` come every ``tile_stride`` pixels from the left ``1 -
test_width`` of the columns, test tiles from the right part, plus a last tile flush with each
region's right and bottom edge; no tile crosses the cut, so no pixel is in both splits. A tile's
boxes are the tight boxes (``x1 <= x < x2``) of each instance's pixels inside the tile, one class
``nucleus``; an instance with fewer than ``min_pixels`` pixels in the tile (a sliver cut by the
tile's edge) gets no box. ``dihedral`` adds each training tile's 7 flips and 90-degree rotations
(exact: the mask is turned with the image and the boxes taken afterwards).

Measured on the wheel's image with the defaults (64 px tiles, stride 16, test_width 0.2, 8 px):
125 nuclei of 25-751 px (median 440), whole boxes 2-39 px a side (median 25x24); 106 of them
reach into the 410 training columns, 23 into the 102 test columns (4 straddle the cut). 667
training tiles (23 columns x 29 rows) with 3.3 boxes each on average (0-8; 4 tiles have none),
116 test tiles (4 x 29) with 2.7 (1-6): 2,212 and 313 boxes. Nuclei are large for a 64 px
tile: 81% of the boxes touch a tile edge (a cut nucleus) and 10% have a side under 4 px (raise
``min_pixels`` or ``tile_size`` for fewer). ``dihedral`` gives 5,336 training tiles. Loading
takes 0.15 s (1.1 s with ``dihedral``) on one thread of the busy 2-core machine.

Caveat: it is one image. Train and test tiles come from different regions of the same slide,
so scores measure generalisation across regions, not across slides, stainings or microscopes.
Tiles overlap, so the seeded validation split taken off the training tiles shares pixels with
the training split (it tracks fitting, not generalisation); set ``data.tile_stride`` to
``tile_size`` for tiles that do not overlap.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from paralab.errors import ConfigError, DatasetNotFoundError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData, DataConfig
from paralab.platform.data.boxes import build_detection_data, pad_boxes
from paralab.platform.data.locate import default_root
from paralab.platform.data.registry import register_dataset

FILES = ("img2d.tif", "mask2d.tif")
CLASSES = ["nucleus"]
FIX = (
    "pip install --no-deps stardist (or make data), which ships them, or set "
    "data.root=<folder with img2d.tif and mask2d.tif>"
)


@dataclass
class NucleiConfig(DataConfig):
    name: str = "nuclei"
    tile_size: int = bounded(64, ge=8, le=4096)  # side of a square tile, in image pixels
    tile_stride: int = bounded(16, ge=1, le=4096)  # pixels between neighbouring tiles
    test_width: float = bounded(0.2, gt=0, lt=1)  # the right-hand share of the columns: test
    min_pixels: int = bounded(8, ge=1)  # fewer visible pixels in a tile: no box (a sliver)
    dihedral: bool = False  # also the 7 flips and 90-degree turns of each training tile
    batch_size: int = bounded(32, ge=1)
    eval_batch_size: int = bounded(256, ge=1)


def _installed_folder() -> Path | None:
    """The folder of the ``stardist`` wheel's sample images, found without importing it."""
    try:
        dist = importlib.metadata.distribution("stardist")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(f"stardist/data/images/{FILES[0]}"))).parent


def find_nuclei(root: str | None) -> Path:
    """The folder holding both files: ``root`` if given (only there), else
    ``$PARALAB_DATA_DIR/nuclei`` (or the cache folder's) and then the stardist wheel."""
    if root:
        looked = [Path(root).expanduser()]
    else:
        installed = _installed_folder()
        looked = [default_root() / "nuclei", *([installed] if installed else [])]
    for folder in looked:
        if all((folder / name).is_file() for name in FILES):
            return folder
    where = ", ".join(str(p) for p in looked)
    if not root and len(looked) == 1:
        where += "; the stardist package is not installed"
    raise DatasetNotFoundError(
        f"dataset 'nuclei': no folder with {FILES[0]} and {FILES[1]} (looked in: {where}). "
        f"Get them: {FIX}"
    )


def _read(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetNotFoundError(f"dataset 'nuclei': cannot read {path} ({error})") from None
    return array.mean(-1) if array.ndim == 3 else array  # a colour image: its grey level


@lru_cache(maxsize=2)
def load_nuclei(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """The image as uint8 (H, W), scaled by its 1st-99.8th percentiles, and the instance mask
    (H, W) int64 (0: background), read once per folder."""
    image, mask = (_read(Path(folder) / name) for name in FILES)
    if image.shape != mask.shape:
        raise ConfigError(
            f"data.root={folder}: {FILES[0]} is {image.shape} but {FILES[1]} is {mask.shape}. "
            "The instance mask must have the image's height and width"
        )
    low, high = np.percentile(image.astype(np.float64), [1.0, 99.8])
    scaled = (image - low) / max(high - low, 1e-20)
    pixels = np.clip(scaled * 255.0, 0, 255).round().astype(np.uint8)
    return pixels, mask.astype(np.int64)


def starts(lo: int, hi: int, size: int, stride: int) -> list[int]:
    """Tile origins in ``[lo, hi)`` every ``stride``, and the last one flush with ``hi``."""
    out = list(range(lo, hi - size + 1, stride))
    if out and out[-1] != hi - size:
        out.append(hi - size)
    return out


def regions(width: int, test_width: float) -> dict[str, tuple[int, int]]:
    """The columns ``[start, stop)`` of each split."""
    cut = min(max(round(width * (1 - test_width)), 1), width - 1)
    return {"train": (0, cut), "test": (cut, width)}


def tile_origins(height: int, columns: tuple[int, int], cfg: NucleiConfig) -> list[tuple[int, int]]:
    """The (y, x) of every tile of a split, row by row."""
    rows = starts(0, height, cfg.tile_size, cfg.tile_stride)
    cols = starts(*columns, cfg.tile_size, cfg.tile_stride)
    return [(y, x) for y in rows for x in cols]


def tile_boxes(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Rows (label 0, x1, y1, x2, y2) of each instance with ``min_pixels`` or more pixels in
    the instance-mask tile (H, W), in instance id order: the tight box of those pixels."""
    ids, inverse, counts = np.unique(mask.ravel(), return_inverse=True, return_counts=True)
    ys, xs = np.divmod(np.arange(mask.size), mask.shape[1])
    lo_x, lo_y = np.full(len(ids), mask.shape[1]), np.full(len(ids), mask.shape[0])
    hi_x, hi_y = np.full(len(ids), -1), np.full(len(ids), -1)
    np.minimum.at(lo_x, inverse, xs)
    np.minimum.at(lo_y, inverse, ys)
    np.maximum.at(hi_x, inverse, xs)
    np.maximum.at(hi_y, inverse, ys)
    keep = (ids > 0) & (counts >= min_pixels)
    rows = np.stack([np.zeros(len(ids)), lo_x, lo_y, hi_x + 1, hi_y + 1], 1)
    return rows[keep].astype(np.float32)


def _turns(image: np.ndarray, mask: np.ndarray, dihedral: bool):
    for k in range(4 if dihedral else 1):
        for flip in (False, True) if dihedral else (False,):
            a, m = np.rot90(image, k), np.rot90(mask, k)
            yield (np.fliplr(a), np.fliplr(m)) if flip else (a, m)


def make_tiles(
    image: np.ndarray, mask: np.ndarray, split: str, cfg: NucleiConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's tiles (N, 1, T, T) uint8 and their padded boxes (N, K, 5)."""
    columns = regions(image.shape[1], cfg.test_width)[split]
    tiles, boxes = [], []
    for y, x in tile_origins(image.shape[0], columns, cfg):
        where = np.s_[y : y + cfg.tile_size, x : x + cfg.tile_size]
        for a, m in _turns(image[where], mask[where], cfg.dihedral and split == "train"):
            tiles.append(np.ascontiguousarray(a))
            boxes.append(torch.from_numpy(tile_boxes(m, cfg.min_pixels)))
    images = torch.from_numpy(np.stack(tiles))[:, None]
    return images, pad_boxes(boxes)


def check_nuclei_config(cfg: NucleiConfig, height: int, width: int) -> None:
    """Every split needs room for one tile."""
    for split, (start, stop) in regions(width, cfg.test_width).items():
        room = min(stop - start, height)
        if cfg.tile_size > room:
            raise ConfigError(
                f"data.tile_size={cfg.tile_size}: the {split} part of the {width}x{height} image "
                f"(data.test_width={cfg.test_width}) is {stop - start} columns wide, too narrow "
                f"for one tile. Set data.tile_size={room} or less, or change data.test_width"
            )


@register_dataset("nuclei", config=NucleiConfig, task="detection")
def nuclei(cfg: NucleiConfig) -> ClassificationData:
    """Tiles of stardist's annotated microscopy image (real nuclei, one class), boxes from its
    instance mask; offline after ``pip install --no-deps stardist``."""
    image, mask = load_nuclei(str(find_nuclei(cfg.root)))
    check_nuclei_config(cfg, *image.shape)
    train = make_tiles(image, mask, "train", cfg)
    test = make_tiles(image, mask, "test", cfg)
    return build_detection_data("nuclei", CLASSES, train, test, cfg)
