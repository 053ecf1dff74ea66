"""Images with captions (``task="image_text"``): targets as one tensor, like every other task's.

Why a tensor of caption indices rather than strings per image: paradigms index, subset, stack,
replay and partition ``targets`` without knowing the task (DESIGN.md, "Targets are one tensor
per example"), and strings do not go through a tensor path. So the dataset holds every distinct
caption once (``data.captions``) and an image's targets are a row of long ints (1 + P,):

* column 0: the image's class id (its concept), an index into ``data.classes``: federated
  partitions, continual class splits and histograms use it as they use a class label, and it is
  the label zero-shot classification is scored against;
* columns 1..P: indices into ``data.captions`` of the image's phrasings, the real ones first,
  then -1 for an image with fewer than P (every image has at least one).

A split may also say which of its images show something training never showed (``held_out``,
(N,) bool; all False unless a dataset sets it on its test split): the canvas caption sets mark
the test images whose (class, count) composition no training canvas has.

Augmentations are refused: a caption may say "on the left" or "at the top", which a flip or a
crop would make false.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from paralab.errors import ConfigError
from paralab.platform.data.base import ClassificationData, DataConfig, InMemoryImages, build_splits

PAD = -1  # the caption index that pads an image's row

#: how captions name Fashion-MNIST's classes (singular, plural): "a pair of trousers", not
#: "a trouser"
FASHION_NOUNS = {
    "t-shirt/top": ("t-shirt", "t-shirts"), "trouser": ("pair of trousers", "pairs of trousers"),
    "pullover": ("pullover", "pullovers"), "dress": ("dress", "dresses"),
    "coat": ("coat", "coats"), "sandal": ("sandal", "sandals"), "shirt": ("shirt", "shirts"),
    "sneaker": ("sneaker", "sneakers"), "bag": ("bag", "bags"),
    "ankle boot": ("ankle boot", "ankle boots"),
}  # fmt: skip


def nouns_for(classes: Sequence[str]) -> list[tuple[str, str]]:
    """(singular, plural) per class, as a caption names it: :data:`FASHION_NOUNS`, "digit d" /
    "ds" for a digit d, else the lower-cased name and its plural."""
    nouns = []
    for name in (c.lower() for c in classes):
        if name in FASHION_NOUNS:
            nouns.append(FASHION_NOUNS[name])
        elif name.isdigit():
            nouns.append((f"digit {name}", f"{name}s"))
        else:
            nouns.append((name, name + ("es" if name.endswith(("s", "x", "ch", "sh")) else "s")))
    return nouns


def class_prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Zero-shot prompts, class-major (class 0's templates first): each template with "{}" the
    class's singular noun (:func:`nouns_for`, so the prompts use the captions' words for the
    same classes of any dataset: Fashion-MNIST's "trouser" is "a pair of trousers" in both),
    "a" before a vowel made "an"."""
    return [
        re.sub(r"\ba (?=[aeiou])", "an ", template.format(noun))
        for noun, _ in nouns_for(classes)
        for template in templates
    ]


def _refuse_augment(name: str, augment: Sequence[str]) -> None:
    if augment:
        raise ConfigError(
            f"data.augment={list(augment)}: {name} holds captions, which may name where things "
            "are (left, right, top, bottom); a flip or a crop would make them false. "
            "Set data.augment=[]"
        )


class CaptionedImages(InMemoryImages):
    """Images (N, C, H, W) uint8 with caption targets (N, 1 + P) long (module docstring), and
    ``held_out`` (N,) bool: which images show a composition training never showed."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: Sequence[str] = (),
        held_out: torch.Tensor | None = None,
    ) -> None:
        _refuse_augment("this dataset", augment)
        if targets.ndim != 2 or targets.shape[0] != images.shape[0] or targets.shape[1] < 2:
            raise ValueError(
                f"caption targets of shape {tuple(targets.shape)} do not fit images of shape "
                f"{tuple(images.shape)}: they must be (N, 1 + P), class id then P caption indices"
            )
        super().__init__(images, targets, mean, std)
        n = len(images)
        self.held_out = torch.zeros(n, dtype=torch.bool) if held_out is None else held_out.bool()
        if self.held_out.shape != (n,):
            raise ValueError(f"held_out must be (N,) = ({n},), not {tuple(self.held_out.shape)}")

    @property
    def phrasings(self) -> int:
        """P: the most captions an image has (the width of targets less the class column)."""
        return self.targets.shape[1] - 1

    def subset(
        self, indices: Sequence[int] | torch.Tensor, augment: bool = True
    ) -> CaptionedImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return CaptionedImages(
            self.images[index],
            self.targets[index],
            self.mean.flatten(),
            self.std.flatten(),
            held_out=self.held_out[index],
        )


def check_captions(
    name: str, split: str, targets: torch.Tensor, n_classes: int, n_captions: int
) -> None:
    """Refuse rows a task cannot use: a class id or caption index out of range, an image with
    no caption, or padding before a real caption. The message names the first such image."""
    if targets.ndim != 2 or targets.shape[1] < 2:
        raise ValueError(f"{name} {split}: caption targets must be (N, 1 + P), not {targets.shape}")
    labels, captions = targets[:, 0], targets[:, 1:]
    pad = captions == PAD
    problems = (
        ((labels < 0) | (labels >= n_classes), f"a class id outside 0..{n_classes - 1}"),
        (((captions < PAD) | (captions >= n_captions)).any(1),
         f"a caption index outside 0..{n_captions - 1} (or {PAD}: padding)"),
        (pad.all(1), "no caption"),
        ((pad[:, :-1] & ~pad[:, 1:]).any(1), "padding before a caption"),
    )  # fmt: skip
    for bad, what in problems:
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ConfigError(
                f"{name} {split}: the image at index {i} has {what} (targets "
                f"{targets[i].tolist()}); {int(bad.sum())} image(s) in this split have the "
                "problem. Give every image a class and at least one caption"
            )


def _first_user(caption: int, parts: dict[str, torch.Tensor]) -> str:
    for split, targets in parts.items():
        users = (targets[:, 1:] == caption).any(1).nonzero().flatten()
        if len(users):
            return f"the {split} image at index {int(users[0])}"
    return "no image"


def build_caption_data(
    name: str,
    classes: list[str],
    captions: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: DataConfig,
    held_out: torch.Tensor | None = None,
) -> ClassificationData:
    """Images (uint8 NCHW) with caption targets (N, 1 + P) indexing ``captions``: checked
    (:func:`check_captions`, no empty caption), a seeded validation split taken off the training
    images, every split a :class:`CaptionedImages`; ``held_out`` (one bool per test image) goes
    to ``data.test.held_out``. ``data.augment`` and ``data.label_fraction`` are refused."""
    _refuse_augment(name, cfg.augment)
    if cfg.label_fraction is not None:
        raise ConfigError(
            f"data.label_fraction={cfg.label_fraction}: {name} is an image-text set, whose "
            "labels are captions, not one class per image. Set data.label_fraction=null, or "
            "data.train_limit=<images> to train on fewer images"
        )
    parts = {"train": train[1], "test": test[1]}
    for i, caption in enumerate(captions):
        if not caption.strip():
            raise ConfigError(
                f"{name}: caption {i} ({caption!r}), used by {_first_user(i, parts)}, is empty. "
                "Write a caption for that image, or drop the row"
            )
    for split, targets in parts.items():
        check_captions(name, split, targets, len(classes), len(captions))
    if held_out is not None and held_out.shape != (len(test[1]),):
        raise ValueError(f"held_out must be one bool per test image ({len(test[1])})")
    data = build_splits(name, classes, train, test, cfg, split_type=CaptionedImages)
    data.task, data.captions = "image_text", list(captions)
    if held_out is not None:
        data.test.held_out = held_out.bool()
    return data
