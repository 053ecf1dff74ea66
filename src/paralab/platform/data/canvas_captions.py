"""Canvas caption sets (``task="image_text"``): canvases of one class's items, with captions.

Why: image-text contrastive learning (CLIP) needs images with captions, and none can be had
offline. The canvas generator already pastes real Fashion-MNIST items or digits at seeded
positions and scales, so the words of a caption (what, how many, how big, where) are known
exactly, and a composition (class, count) can be kept out of training on purpose: zero-shot
on compositions never seen is the question CLIP-style models are asked.

How: each canvas gets one composition (class, count k in [items_min, items_max]), balanced
over the allowed compositions and shuffled (seeded); :func:`draw_placements` places
``items_max`` items per canvas, the first k are kept, and each takes a random source item of
the canvas's class; :func:`paint` pastes them. Captions come from:

* the class (``FASHION_NOUNS``; a digit d is "digit d", plural "ds"), singular or plural;
* the count ("a", "two", ...);
* the size: "large" if the items' mean side is above the middle of the config's
  ``item_size * [scale_min, scale_max]``, else "small" (no size word when the two are equal);
* the position: the items' mean box centre in thirds of the canvas ("at the top left",
  "on the right", "in the centre", ...; a centre exactly on a third's edge counts as the middle).

Each image gets ``phrasings`` (P) captions: column 1 is always the full one ("a photo of two
small sandals at the top left"), columns 2..P a seeded choice of the other templates.

Held-out compositions: a seeded ``held_out_fraction`` of the (class, count) pairs, never every
count of one class nor every class of one count (:func:`held_out_compositions`), is absent
from the training canvases (so from validation too); the test canvases cycle through every
pair, and ``data.test.held_out`` (N,) bool marks the test images of held-out pairs.

Cost: 10,000 64x64 canvases of 1-2 Fashion-MNIST items with 3 captions each take 0.35-0.55 s
on the 2-core machine whose other core was busy (the captions 0.02 s of it; the segmentation
canvases of 1-2 items 0.36 s). The default set (10,000 + 2,000 canvases, Fashion-MNIST loaded,
split) builds in 1.5 s, ``canvas_digits_captions`` too (sklearn's import). Measured with::

    python -c "import time, torch; from paralab.platform.data.mnist import fashion_mnist as f;
    from paralab.platform.data.base import DataConfig as D;
    from paralab.platform.data import canvas_captions as c;
    s = f(D(name='fashion_mnist', val_fraction=0)).train;
    cfg = c.CaptionCanvasConfig(); p = torch.tensor([(a, k) for a in range(10) for k in (1, 2)]);
    t = time.perf_counter(); m = c.make_caption_canvases(s.images, s.targets, 10000, cfg, 0, p);
    c.Captioner(c.nouns_for(c.FASHION_CLASSES)).targets(m); print(time.perf_counter() - t)"
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from math import floor

import torch

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData
from paralab.platform.data.canvas import (
    CanvasConfig,
    Placements,
    canvas_sources,
    check_canvas_config,
    draw_placements,
    one_thread,
    paint,
)
from paralab.platform.data.captions import build_caption_data, nouns_for
from paralab.platform.data.mnist import FASHION_CLASSES
from paralab.platform.data.registry import register_dataset

COUNT_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SIZES = ("small", "large")
POSITIONS = (  # [row third * 3 + column third]
    "at the top left", "at the top", "at the top right",
    "on the left", "in the centre", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
)  # fmt: skip
TEMPLATES = (  # the first is every image's first caption
    "a photo of {np_size} {where}",
    "a photo of {np}",
    "{np_size} {where}",
    "a picture of {bare} {where}",
    "{np_size}",
    "there {be} {np} {where}",
)


@dataclass
class CaptionCanvasConfig(CanvasConfig):
    name: str = "canvas_fashion_captions"
    items_min: int = bounded(1, ge=1, le=64)  # each canvas shows its class at least once
    items_max: int = bounded(2, ge=1, le=64)
    phrasings: int = bounded(3, ge=1, le=len(TEMPLATES))  # P: captions per image
    held_out_fraction: float = bounded(0.2, ge=0, lt=1)  # of the (class, count) pairs


@dataclass
class DigitsCaptionCanvasConfig(CaptionCanvasConfig):
    name: str = "canvas_digits_captions"
    item_size: int = bounded(16, ge=1, le=1024)  # the 8x8 digits, upscaled


@dataclass
class CaptionCanvases:
    """Painted canvases and what their captions say; all tensors (n,) long but ``images``
    (n, 1, S, S) uint8 and ``templates`` (n, P). ``size``: 0 small, 1 large, -1 not said;
    ``where``: an index into :data:`POSITIONS`."""

    images: torch.Tensor
    label: torch.Tensor
    count: torch.Tensor
    size: torch.Tensor
    where: torch.Tensor
    templates: torch.Tensor
    placements: Placements


def held_out_compositions(n_classes: int, cfg: CaptionCanvasConfig) -> list[tuple[int, int]]:
    """The (class, count) pairs kept out of training, sorted: ``round(held_out_fraction *
    pairs)`` of them in a seeded order, skipping any that would leave a class or a count with
    no training canvas; too many to leave every class and count one is a ConfigError."""
    counts = list(range(cfg.items_min, cfg.items_max + 1))
    pairs = [(c, k) for c in range(n_classes) for k in counts]
    wanted = round(cfg.held_out_fraction * len(pairs))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(7_919 * cfg.seed))
    held: list[tuple[int, int]] = []
    per_class, per_count = [0] * n_classes, dict.fromkeys(counts, 0)
    for c, k in (pairs[i] for i in order.tolist()):
        if len(held) < wanted and per_class[c] + 1 < len(counts) and per_count[k] + 1 < n_classes:
            held.append((c, k))
            per_class[c], per_count[k] = per_class[c] + 1, per_count[k] + 1
    if len(held) < wanted:
        most = floor(100 * len(held) / len(pairs)) / 100
        raise ConfigError(
            f"data.held_out_fraction={cfg.held_out_fraction} asks to keep {wanted} of the "
            f"{len(pairs)} (class, count) pairs out of training, but only {len(held)} can be "
            f"while every class and every count ({cfg.items_min}..{cfg.items_max}) keeps a "
            f"training pair. Set data.held_out_fraction={most} "
            "or less, or widen data.items_min..data.items_max"
        )
    return sorted(held)


def make_caption_canvases(
    items: torch.Tensor,
    labels: torch.Tensor,
    n: int,
    cfg: CaptionCanvasConfig,
    seed: int,
    pairs: torch.Tensor,
) -> CaptionCanvases:
    """``n`` canvases from source items (M, 1, h, w) uint8 with labels (M,), each showing one
    (class, count) row of ``pairs`` (P, 2), cycled through and shuffled; seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with one_thread():  # many small ops: see one_thread
        pick = (torch.arange(n) % len(pairs))[torch.randperm(n, generator=generator)]
        label, count = pairs[pick, 0].long(), pairs[pick, 1].long()
        p = _placements(labels, label, count, cfg, generator)
        images, _ = paint(items, p, n, cfg.canvas_size, cfg.threshold)
        templates = torch.rand(n, len(TEMPLATES) - 1, generator=generator).argsort(1)
        templates = torch.cat([torch.zeros(n, 1, dtype=torch.long), templates + 1], 1)
        size, where = _size_and_where(p, count, cfg)
    return CaptionCanvases(images, label, count, size, where, templates[:, : cfg.phrasings], p)


def _placements(
    labels: torch.Tensor,
    label: torch.Tensor,
    count: torch.Tensor,
    cfg: CaptionCanvasConfig,
    generator: torch.Generator,
) -> Placements:
    """:func:`draw_placements` of ``items_max`` items per canvas, the first ``count`` of each
    kept, every one a random source item of its canvas's class ``label``."""
    full = draw_placements(len(label), labels, replace(cfg, items_min=cfg.items_max), generator)
    keep = full.order < count[full.canvas]
    p = Placements(**{f.name: getattr(full, f.name)[keep] for f in fields(Placements)})
    by_class = torch.argsort(labels, stable=True)
    per_class = torch.bincount(labels.long(), minlength=int(label.max()) + 1)
    if (per_class[label] == 0).any():
        missing = sorted(set(label[per_class[label] == 0].tolist()))
        raise ValueError(f"no source items of class(es) {missing} to paste")
    item_class = label[p.canvas]
    draw = torch.rand(len(item_class), generator=generator, dtype=torch.double)
    offset = (draw * per_class[item_class]).long().clamp(max=per_class[item_class] - 1)
    starts = torch.cumsum(per_class, 0) - per_class
    return replace(p, source=by_class[starts[item_class] + offset], label=item_class)


def _size_and_where(
    p: Placements, count: torch.Tensor, cfg: CaptionCanvasConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    def mean(values: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(count), dtype=torch.double)
        return total.index_add_(0, p.canvas, values.double()) / count

    side, third = mean(p.size), cfg.canvas_size / 3
    middle = cfg.item_size * (cfg.scale_min + cfg.scale_max) / 2
    size = (side > middle).long() if cfg.scale_min < cfg.scale_max else torch.full_like(count, -1)
    column, row = mean(p.left + p.size / 2), mean(p.top + p.size / 2)
    column = (column >= third).long() + (column > 2 * third).long()
    row = (row >= third).long() + (row > 2 * third).long()
    return size, row * 3 + column


def _phrase(words: list[str | None]) -> str:
    return " ".join(w for w in words if w)


def captions_of(noun: tuple[str, str], count: int, size: int, where: int) -> list[str]:
    """The text of every template (:data:`TEMPLATES`) for one canvas's composition."""
    adjective = SIZES[size] if size >= 0 else None
    word = COUNT_WORDS[count] if count < len(COUNT_WORDS) else str(count)

    def noun_phrase(adj: str | None, counted: bool = True) -> str:
        if count == 1:
            rest = _phrase([adj, noun[0]])
            return ("an " if rest[0] in "aeiou" else "a ") + rest
        return _phrase([word if counted else None, adj, noun[1]])

    parts = {"np": noun_phrase(None), "np_size": noun_phrase(adjective),
             "bare": noun_phrase(None, counted=False), "where": POSITIONS[where],
             "be": "is" if count == 1 else "are"}  # fmt: skip
    return [template.format(**parts) for template in TEMPLATES]


class Captioner:
    """Caption indices for canvases; ``captions`` grows with every new string an image uses,
    in the order first met, so the splits captioned by one :class:`Captioner` share one list."""

    def __init__(self, nouns: list[tuple[str, str]]) -> None:
        self.nouns = nouns
        self.captions: list[str] = []
        self._index: dict[str, int] = {}
        self._texts: dict[tuple[int, ...], list[str]] = {}

    def _id(self, key: tuple[int, ...], template: int) -> int:
        if key not in self._texts:
            self._texts[key] = captions_of(self.nouns[key[0]], *key[1:])
        text = self._texts[key][template]
        if text not in self._index:
            self._index[text] = len(self.captions)
            self.captions.append(text)
        return self._index[text]

    def targets(self, c: CaptionCanvases) -> torch.Tensor:
        """(n, 1 + P) long: class id, then the caption indices of the chosen templates."""
        keys = torch.stack([c.label, c.count, c.size, c.where], 1).tolist()
        rows = [
            [key[0], *(self._id(tuple(key), t) for t in chosen)]
            for key, chosen in zip(keys, c.templates.tolist(), strict=True)
        ]
        return torch.tensor(rows, dtype=torch.long).view(len(keys), 1 + c.templates.shape[1])


def build_caption_canvas_data(
    name: str,
    classes: list[str],
    train_source: tuple[torch.Tensor, torch.Tensor],
    test_source: tuple[torch.Tensor, torch.Tensor],
    cfg: CaptionCanvasConfig,
) -> ClassificationData:
    """Train canvases from ``train_source`` items and the pairs not held out, test canvases
    from ``test_source`` items and every pair; ``data.test.held_out`` marks the held-out ones."""
    check_canvas_config(cfg)
    counts = range(cfg.items_min, cfg.items_max + 1)
    every = torch.tensor([(c, k) for c in range(len(classes)) for k in counts])
    held_pairs = set(held_out_compositions(len(classes), cfg))
    held = torch.tensor([tuple(pair) in held_pairs for pair in every.tolist()], dtype=torch.bool)
    train = make_caption_canvases(*train_source, cfg.train_images, cfg, 2 * cfg.seed, every[~held])
    test = make_caption_canvases(*test_source, cfg.test_images, cfg, 2 * cfg.seed + 1, every)
    captioner = Captioner(nouns_for(classes))
    parts = [(t.images, captioner.targets(t)) for t in (train, test)]
    width = cfg.items_max + 1  # (class, count) as one code
    held_codes = every[held, 0] * width + every[held, 1]
    held_out = torch.isin(test.label * width + test.count, held_codes)
    return build_caption_data(name, classes, captioner.captions, *parts, cfg, held_out=held_out)


@register_dataset("canvas_fashion_captions", config=CaptionCanvasConfig, task="image_text")
def canvas_fashion_captions(cfg: CaptionCanvasConfig) -> ClassificationData:
    """Fashion-MNIST items on 64x64 canvases with captions: 10 classes, no download."""
    check_canvas_config(cfg)
    held_out_compositions(len(FASHION_CLASSES), cfg)  # refuse a bad fraction before loading
    name = "canvas_fashion_captions"
    return build_caption_canvas_data(name, *canvas_sources("fashion", cfg), cfg)


@register_dataset("canvas_digits_captions", config=DigitsCaptionCanvasConfig, task="image_text")
def canvas_digits_captions(cfg: DigitsCaptionCanvasConfig) -> ClassificationData:
    """scikit-learn digits on 64x64 canvases with captions: 10 classes, no download."""
    check_canvas_config(cfg)
    name = "canvas_digits_captions"
    return build_caption_canvas_data(name, *canvas_sources("digits", cfg), cfg)
