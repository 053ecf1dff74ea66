"""Canvases: a built-in segmentation set of small labelled images pasted onto a black canvas.

Why: segmentation models need per-pixel masks, and no such set ships with the OS or a wheel.
Pasting Fashion-MNIST items (Debian's dataset-fashion-mnist, already located by mnist.py) or
scikit-learn's 8x8 digits at seeded positions and scales gives exact masks for free, with no
download, the same bytes for the same seed, and a task a small U-Net learns in minutes.

How: each canvas gets k items (k in [items_min, items_max]); each item is resized (bilinear)
to round(item_size * scale) px and placed fully inside the canvas. An item's foreground is its
resized pixels above ``threshold * 255``; only those are pasted, so a later item overwrites an
earlier one exactly where it is visible, in the image and in the mask (class id + 1; 0 is
background). Train canvases use only source training items, test canvases only source test items.

Speed: items are resized and pasted in batches, one per (paste order, size) pair, with no
per-item Python, on one torch thread (see :func:`one_thread`). 10,000 64x64 canvases of
Fashion-MNIST items (the defaults, ~20k items) take 0.5 s on a 2-core machine whose other core
was busy; loading Fashion-MNIST takes 0.5-0.7 s more. Measured with::

    python -c "import time; from paralab.platform.data.base import DataConfig as D;
    from paralab.platform.data.canvas import CanvasConfig as C, make_canvases as m;
    from paralab.platform.data.mnist import fashion_mnist as f;
    s = f(D(name='fashion_mnist', val_fraction=0)).train; t = time.perf_counter();
    m(s.images, s.targets, 10000, C(), seed=0); print(time.perf_counter() - t)"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData, DataConfig, build_segmentation_data
from paralab.platform.data.registry import register_dataset


@dataclass
class CanvasConfig(DataConfig):
    name: str = "canvas_fashion"
    train_images: int = bounded(10_000, ge=1)
    test_images: int = bounded(2_000, ge=1)
    canvas_size: int = bounded(64, ge=4, le=1024)
    item_size: int = bounded(28, ge=1, le=1024)  # an item's side before scaling (px)
    items_min: int = bounded(1, ge=0, le=64)
    items_max: int = bounded(3, ge=1, le=64)
    scale_min: float = bounded(0.75, gt=0, le=32)
    scale_max: float = bounded(1.5, gt=0, le=32)
    threshold: float = bounded(0.2, ge=0, lt=1)  # foreground: resized intensity > threshold*255
    seed: int = bounded(0, ge=0)
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int = bounded(256, ge=1)


@dataclass
class DigitsCanvasConfig(CanvasConfig):
    name: str = "canvas_digits"
    item_size: int = bounded(16, ge=1, le=1024)  # the 8x8 digits, upscaled


@dataclass
class Placements:
    """Every pasted item, in paste order within each canvas (a later one overwrites an earlier
    one). All fields are long tensors of shape (T,); ``label`` is the source class id."""

    canvas: torch.Tensor
    source: torch.Tensor
    label: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    size: torch.Tensor
    order: torch.Tensor  # 0 for a canvas's first item, 1 for its second...


def check_canvas_config(cfg: CanvasConfig) -> None:
    """The checks that involve two options at once (each option's range is declared)."""
    for low, high in (("items_min", "items_max"), ("scale_min", "scale_max")):
        lo, hi = getattr(cfg, low), getattr(cfg, high)
        if lo > hi:
            raise ConfigError(
                f"data.{low}={lo} is above data.{high}={hi}: "
                f"set data.{high}={lo} or more, or data.{low}={hi} or less"
            )
    largest = round(cfg.item_size * cfg.scale_max)
    if largest > cfg.canvas_size:
        fit = cfg.canvas_size / cfg.item_size
        raise ConfigError(
            f"data.scale_max={cfg.scale_max} makes an item {largest} px (data.item_size="
            f"{cfg.item_size}), which cannot fit in data.canvas_size={cfg.canvas_size}: "
            f"set data.scale_max={fit:.3g} or less, or data.canvas_size={largest} or more"
        )
    if round(cfg.item_size * cfg.scale_min) < 1:
        raise ConfigError(
            f"data.scale_min={cfg.scale_min} makes an item 0 px (data.item_size="
            f"{cfg.item_size}): set data.scale_min={1 / cfg.item_size:.3g} or more"
        )


def draw_placements(
    n: int, labels: torch.Tensor, cfg: CanvasConfig, generator: torch.Generator
) -> Placements:
    """Seeded item counts, source items, sizes and positions for ``n`` canvases."""
    k = torch.randint(cfg.items_min, cfg.items_max + 1, (n,), generator=generator)
    total = int(k.sum())
    canvas = torch.repeat_interleave(torch.arange(n), k)
    source = torch.randint(0, len(labels), (total,), generator=generator)
    scale = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.rand(total, generator=generator)
    size = (cfg.item_size * scale.double()).round().long().clamp(1, cfg.canvas_size)
    room = (cfg.canvas_size - size + 1).double()
    top = (torch.rand(total, generator=generator, dtype=torch.double) * room).long()
    left = (torch.rand(total, generator=generator, dtype=torch.double) * room).long()
    order = torch.arange(total) - (torch.cumsum(k, 0) - k)[canvas]
    return Placements(canvas, source, labels[source].long(), top, left, size, order)


def resize_items(items: torch.Tensor, size: int) -> torch.Tensor:
    """Source items (G, 1, h, w) uint8 resized (bilinear) to (G, size, size) uint8."""
    resized = F.interpolate(items.float(), size=(size, size), mode="bilinear", align_corners=False)
    return resized[:, 0].round_().clamp_(0, 255).to(torch.uint8)


def paint(
    items: torch.Tensor, placements: Placements, n: int, canvas_size: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the placed items; return images (n, 1, S, S) and masks (n, S, S), both uint8."""
    images = torch.zeros(n * canvas_size * canvas_size, dtype=torch.uint8)
    masks = torch.zeros_like(images)
    p = placements
    # One batch per (order, size): no canvas appears twice in it, so no index is written twice,
    # and a canvas's later items are written after its earlier ones.
    key = p.order * (canvas_size + 1) + p.size
    for value in torch.unique(key).tolist():
        idx = (key == value).nonzero().flatten()
        s = value % (canvas_size + 1)
        patch = resize_items(items[p.source[idx]], s)
        ar = torch.arange(s)
        rows = (p.top[idx, None] + ar).view(-1, s, 1)
        cols = (p.left[idx, None] + ar).view(-1, 1, s)
        where = (p.canvas[idx].view(-1, 1, 1) * canvas_size + rows) * canvas_size + cols
        fg = patch > threshold * 255
        at = fg.view(-1).nonzero().squeeze(1)  # item-major, so item i's pixels are together
        pixels = where.view(-1)[at]
        images[pixels] = patch.view(-1)[at]
        masks[pixels] = torch.repeat_interleave((p.label[idx] + 1).to(torch.uint8), fg.sum((1, 2)))
    side = (n, canvas_size, canvas_size)
    return images.view(n, 1, canvas_size, canvas_size), masks.view(side)


def make_canvases(
    items: torch.Tensor, labels: torch.Tensor, n: int, cfg: CanvasConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor, Placements]:
    """``n`` canvases from source items (M, 1, h, w) uint8 with labels (M,): images, masks and
    the placements that made them (the same for the same seed)."""
    if items.ndim != 4 or items.shape[1] != 1 or items.dtype != torch.uint8:
        raise ValueError("canvas items must be uint8 (M, 1, h, w)")
    if len(items) == 0:
        raise ValueError("no source items to paste")
    placements = draw_placements(n, labels, cfg, torch.Generator().manual_seed(seed))
    with one_thread():
        images, masks = paint(items, placements, n, cfg.canvas_size, cfg.threshold)
    return images, masks, placements


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: painting is ~1,000 small ops, each of which, run on several
    threads, waits for every one of them, so a machine whose other cores are busy took 10x
    longer on 2 threads than on 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_canvas_data(
    name: str,
    classes: list[str],
    train_source: tuple[torch.Tensor, torch.Tensor],
    test_source: tuple[torch.Tensor, torch.Tensor],
    cfg: CanvasConfig,
) -> ClassificationData:
    """Train canvases from ``train_source`` items only, test canvases from ``test_source`` only;
    ``classes`` are the source classes (the data's classes get "background" in front)."""
    check_canvas_config(cfg)
    train = make_canvases(*train_source, cfg.train_images, cfg, seed=2 * cfg.seed)
    test = make_canvases(*test_source, cfg.test_images, cfg, seed=2 * cfg.seed + 1)
    return build_segmentation_data(
        name, ["background", *classes], train[:2], test[:2], cfg, ignore_index=None
    )


Source = tuple[torch.Tensor, torch.Tensor]


def canvas_sources(items: str, cfg: CanvasConfig) -> tuple[list[str], Source, Source]:
    """The class names and the (images, labels) training and test items the canvases of
    every task paste: ``items`` is "fashion" (Fashion-MNIST) or "digits" (scikit-learn's)."""
    if items == "fashion":
        from paralab.platform.data.mnist import FASHION_CLASSES, fashion_mnist

        config = DataConfig(
            name="fashion_mnist", root=cfg.root, download=cfg.download, val_fraction=0
        )
        source, classes = fashion_mnist(config), FASHION_CLASSES
    else:
        from paralab.platform.data.digits import DigitsConfig, digits

        source = digits(DigitsConfig(name="digits", val_fraction=0))
        classes = source.classes
    train = (source.train.images, source.train.targets)
    return list(classes), train, (source.test.images, source.test.targets)


@register_dataset("canvas_fashion", config=CanvasConfig, task="segmentation")
def canvas_fashion(cfg: CanvasConfig) -> ClassificationData:
    """Fashion-MNIST items pasted on 64x64 canvases: exact masks, 11 classes, no download."""
    check_canvas_config(cfg)
    return build_canvas_data("canvas_fashion", *canvas_sources("fashion", cfg), cfg)


@register_dataset("canvas_digits", config=DigitsCanvasConfig, task="segmentation")
def canvas_digits(cfg: DigitsCanvasConfig) -> ClassificationData:
    """scikit-learn digits pasted on 64x64 canvases: exact masks, 11 classes, no download."""
    check_canvas_config(cfg)
    return build_canvas_data("canvas_digits", *canvas_sources("digits", cfg), cfg)
