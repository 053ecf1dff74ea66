"""Experience streams cut from a dataset's splits: pure tensor work, no Avalanche.

A scenario turns the train and test splits into ``n_experiences`` pairs of
:class:`~paralab.platform.data.base.InMemoryImages`, so the paradigm can hand them to Avalanche
*and* keep the batch-fetching fast path. Label conventions for class labels:

- ``class``: experience i holds the i-th slice of a seeded class order; labels are remapped to
  their position in that order (so experience 0 holds labels 0..k-1, as iCaRL expects). One head.
- ``task``: the same class slices, each with task label i and labels local to the slice
  (0..k-1): one head per task.
- ``domain``: every experience holds all classes; experience i permutes the pixels (a seeded
  permutation; experience 0 keeps the original images) or rotates the images by i*180/n degrees.
  ``domain_shift=split`` is split MNIST's domain-incremental form (van de Ven & Tolias 2019):
  the class slices of ``task``, labels local to the slice, but no task label and one head of
  k outputs ("first or second digit of its pair"): the input distribution moves, the output
  space stays.

For masks (dense tasks), class-incremental follows Cermelli et al. (2020): experience i trains
on the images that show a class of its slice, with only that slice labelled; every other pixel
is background (the "background shift": old and future classes look like background). Its test
images are those showing a class of the slice, with every class labelled, and its score is the
mean IoU over the slice's classes. Class ids are kept (background 0 is in every experience).
Domain shifts move masks with their images (pixels permuted alike, rotated with nearest).

For boxes (detection), class-incremental follows Shmelkov et al. (2017): experience i trains on
the images that show an object of its slice, with only that slice's boxes labelled; objects of
other classes stay in the pixels, unlabelled. Its test images are those showing a class of the
slice with every box labelled, and its score is the mean AP over the slice's classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from paralab.platform.data.augment import IGNORE_INDEX
from paralab.platform.data.base import InMemoryImages
from paralab.platform.data.boxes import BoxImages, keep_classes, showing

SCENARIOS = ("class", "task", "domain")
DOMAIN_SHIFTS = ("permuted", "rotated", "split")


@dataclass
class Experience:
    """One experience: its train and test images, its task label and its original classes."""

    train: InMemoryImages
    test: InMemoryImages
    task_label: int
    classes: list[int]
    #: the classes this experience's score covers (dense tasks), None: the whole headline
    score_classes: list[int] | None = None


def class_order(classes: int | list[int], seed: int | None) -> list[int]:
    """A seeded permutation of the class ids ``classes`` (an int n: 0..n-1; ``None``: as given)."""
    ids = list(range(classes)) if isinstance(classes, int) else list(classes)
    if seed is None:
        return ids
    generator = torch.Generator().manual_seed(seed)
    return [ids[i] for i in torch.randperm(len(ids), generator=generator).tolist()]


def split_classes(order: list[int], n_experiences: int) -> list[list[int]]:
    """Consecutive slices of ``order``; the first ones take one class more when uneven."""
    base, extra = divmod(len(order), n_experiences)
    slices, start = [], 0
    for i in range(n_experiences):
        size = base + (1 if i < extra else 0)
        slices.append(order[start : start + size])
        start += size
    return slices


def _select(split: InMemoryImages, classes: list[int], relabel: dict[int, int]) -> InMemoryImages:
    mask = torch.isin(split.targets, torch.tensor(classes))
    index = mask.nonzero().flatten()
    part = split.subset(index)
    table = torch.full((int(split.targets.max()) + 1,), -1, dtype=torch.long)
    table[torch.tensor(list(relabel))] = torch.tensor(list(relabel.values()))
    part.targets = table[part.targets]
    return part


def _select_masks(split: InMemoryImages, classes: list[int], only_these: bool) -> InMemoryImages:
    """The images showing a class of ``classes``; with ``only_these``, every other class (not
    void) becomes background."""
    wanted = torch.tensor(classes, dtype=split.targets.dtype)
    shown = torch.isin(split.targets.flatten(1), wanted).any(1)
    part = split.subset(shown.nonzero().flatten())
    if only_these:
        table = torch.zeros(256, dtype=split.targets.dtype)
        table[wanted.long()] = wanted
        table[IGNORE_INDEX] = IGNORE_INDEX
        part.targets = table[part.targets.long()]
    return part


def dense_class_stream(
    train: InMemoryImages,
    test: InMemoryImages,
    n_experiences: int,
    order: list[int],
    background_shift: bool = True,
) -> list[Experience]:
    """Class-incremental experiences over masks or boxes (module docstring): experience i's
    images show a class of its slice; in its training images only that slice is labelled
    (masks: the background shift; boxes: other objects unlabelled), its test images keep every
    label. ``background_shift=False`` keeps every class labelled in training too: joint
    training, which sees all experiences at once, is the upper bound only with full labels."""
    select = _select_boxes if isinstance(train, BoxImages) else _select_masks
    return [
        Experience(
            select(train, classes, only_these=background_shift),
            select(test, classes, only_these=False),
            0,
            list(classes),
            score_classes=list(classes),
        )
        for classes in split_classes(order, n_experiences)
    ]


def _select_boxes(split: BoxImages, classes: list[int], only_these: bool) -> BoxImages:
    """The images showing an object of ``classes``; with ``only_these``, other boxes dropped."""
    part = split.subset(showing(split.targets, classes).nonzero().flatten())
    if only_these:
        part.targets = keep_classes(part.targets, classes)
    return part


def concept_stream(
    train: InMemoryImages, test: InMemoryImages, n_experiences: int, order: list[int]
) -> list[Experience]:
    """Class-incremental experiences over captioned images (targets (N, 1 + P), the class id
    first): experience i holds the images of its slice of classes, class ids kept, and its
    score is the task's headline on them (zero-shot accuracy over every class so far and to
    come: what an image-text model forgets of earlier concepts shows there)."""

    def select(split: InMemoryImages, classes: list[int]) -> InMemoryImages:
        return split.subset(torch.isin(split.targets[:, 0], torch.tensor(classes)).nonzero()[:, 0])

    return [
        Experience(select(train, classes), select(test, classes), 0, list(classes))
        for classes in split_classes(order, n_experiences)
    ]


def class_split_stream(
    train: InMemoryImages,
    test: InMemoryImages,
    n_experiences: int,
    order: list[int],
    task_labels: bool,
    local_labels: bool | None = None,
) -> list[Experience]:
    """Class- (``task_labels=False``) or task-incremental experiences over ``order``.
    ``local_labels`` (default: as ``task_labels``) numbers each slice's classes 0..k-1; with
    ``task_labels=False`` that is the split domain-incremental stream."""
    local = task_labels if local_labels is None else local_labels
    stream = []
    for i, classes in enumerate(split_classes(order, n_experiences)):
        if local:
            relabel = {c: j for j, c in enumerate(classes)}
        else:
            relabel = {c: order.index(c) for c in classes}
        stream.append(
            Experience(
                _select(train, classes, relabel),
                _select(test, classes, relabel),
                i if task_labels else 0,
                list(classes),
            )
        )
    return stream


def pixel_permutations(n_experiences: int, num_pixels: int, seed: int) -> list[torch.Tensor]:
    """Identity for experience 0, then one seeded pixel permutation per experience."""
    generator = torch.Generator().manual_seed(seed)
    perms = [torch.arange(num_pixels)]
    perms += [torch.randperm(num_pixels, generator=generator) for _ in range(n_experiences - 1)]
    return perms


def rotation_angles(n_experiences: int) -> list[float]:
    return [i * 180.0 / n_experiences for i in range(n_experiences)]


def _shift(split: InMemoryImages, move) -> InMemoryImages:
    """``split`` with ``move`` applied to its NCHW images (and to its masks, as N1HW)."""
    mean, std = split.mean.flatten(), split.std.flatten()
    targets = split.targets.clone()
    if targets.ndim == 3:
        targets = move(targets.unsqueeze(1)).squeeze(1).contiguous()
    return InMemoryImages(move(split.images), targets, mean, std, split.augment)


def permute_pixels(split: InMemoryImages, perm: torch.Tensor) -> InMemoryImages:
    def move(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w).contiguous()

    return _shift(split, move)


def rotate(split: InMemoryImages, angle: float) -> InMemoryImages:
    """Rotated by ``angle`` degrees (nearest neighbour: masks keep their class ids; corners
    that come in are 0, background)."""
    from torchvision.transforms.functional import rotate as tv_rotate

    return _shift(split, lambda x: tv_rotate(x, angle) if angle else x.clone())


def domain_stream(
    train: InMemoryImages, test: InMemoryImages, n_experiences: int, shift: str, seed: int
) -> list[Experience]:
    """Every experience holds all classes under its own input transformation."""
    classes = sorted(set(train.targets.unique().tolist()) - {IGNORE_INDEX})
    if shift == "permuted":
        num_pixels = train.images.shape[-1] * train.images.shape[-2]
        perms = pixel_permutations(n_experiences, num_pixels, seed)
        return [
            Experience(permute_pixels(train, p), permute_pixels(test, p), 0, classes) for p in perms
        ]
    return [
        Experience(rotate(train, a), rotate(test, a), 0, classes)
        for a in rotation_angles(n_experiences)
    ]


def stream_for(cfg: Any, data: Any, task: Any, background_shift: bool = True) -> list[Experience]:
    """The stream a continual paradigm config (``scenario``, ``n_experiences``,
    ``class_order_seed``, ``domain_shift``) cuts from ``data`` for ``task``."""
    return build_stream(
        data.train,
        data.test,
        task.incremental_classes(),
        cfg.scenario,
        cfg.n_experiences,
        cfg.class_order_seed,
        cfg.domain_shift,
        background_shift=background_shift,
    )


def build_stream(
    train: InMemoryImages,
    test: InMemoryImages,
    classes: int | list[int],
    scenario: str,
    n_experiences: int,
    order_seed: int | None,
    shift: str = "permuted",
    background_shift: bool = True,
) -> list[Experience]:
    """The experiences of ``scenario`` over the class ids ``classes`` (an int n: 0..n-1); see
    the module docstring for the label conventions. Targets of shape (N, H, W) are masks;
    ``background_shift`` applies to them, and to boxes."""
    if scenario == "domain" and shift != "split":
        return domain_stream(train, test, n_experiences, shift, order_seed or 0)
    order = class_order(classes, order_seed)
    if scenario == "domain":  # split: class slices, local labels, one head
        return class_split_stream(train, test, n_experiences, order, False, local_labels=True)
    if train.targets.ndim == 2:  # captions: the class id, then caption indices
        return concept_stream(train, test, n_experiences, order)
    if train.targets.ndim == 3:  # masks (N, H, W) or boxes (N, K, 5)
        return dense_class_stream(train, test, n_experiences, order, background_shift)
    return class_split_stream(train, test, n_experiences, order, task_labels=scenario == "task")
