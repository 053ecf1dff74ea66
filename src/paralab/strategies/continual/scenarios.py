"""Experience streams cut from a classification dataset: pure tensor work, no Avalanche.

A scenario turns the train and test splits into ``n_experiences`` pairs of
:class:`~paralab.platform.data.base.InMemoryImages`, so the paradigm can hand them to Avalanche
*and* keep the batch-fetching fast path. Label conventions:

- ``class``: experience i holds the i-th slice of a seeded class order; labels are remapped to
  their position in that order (so experience 0 holds labels 0..k-1, as iCaRL expects). One head.
- ``task``: the same class slices, each with task label i and labels local to the slice
  (0..k-1): one head per task.
- ``domain``: every experience holds all classes; experience i permutes the pixels (a seeded
  permutation; experience 0 keeps the original images) or rotates the images by i*180/n degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paralab.platform.data.base import InMemoryImages

SCENARIOS = ("class", "task", "domain")
DOMAIN_SHIFTS = ("permuted", "rotated")


@dataclass
class Experience:
    """One experience: its train and test images, its task label and its original classes."""

    train: InMemoryImages
    test: InMemoryImages
    task_label: int
    classes: list[int]


def class_order(num_classes: int, seed: int | None) -> list[int]:
    """A seeded permutation of the class ids (``None``: the natural order)."""
    if seed is None:
        return list(range(num_classes))
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_classes, generator=generator).tolist()


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


def class_split_stream(
    train: InMemoryImages,
    test: InMemoryImages,
    n_experiences: int,
    order: list[int],
    task_labels: bool,
) -> list[Experience]:
    """Class- (``task_labels=False``) or task-incremental experiences over ``order``."""
    stream = []
    for i, classes in enumerate(split_classes(order, n_experiences)):
        if task_labels:
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


def _shift(split: InMemoryImages, images: torch.Tensor) -> InMemoryImages:
    mean, std = split.mean.flatten(), split.std.flatten()
    return InMemoryImages(images, split.targets.clone(), mean, std, split.augment)


def permute_pixels(split: InMemoryImages, perm: torch.Tensor) -> InMemoryImages:
    n, c, h, w = split.images.shape
    images = split.images.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)
    return _shift(split, images.contiguous())


def rotate(split: InMemoryImages, angle: float) -> InMemoryImages:
    from torchvision.transforms.functional import rotate as tv_rotate

    return _shift(split, tv_rotate(split.images, angle) if angle else split.images.clone())


def domain_stream(
    train: InMemoryImages, test: InMemoryImages, n_experiences: int, shift: str, seed: int
) -> list[Experience]:
    """Every experience holds all classes under its own input transformation."""
    classes = sorted(set(train.targets.tolist()))
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


def build_stream(
    train: InMemoryImages,
    test: InMemoryImages,
    num_classes: int,
    scenario: str,
    n_experiences: int,
    order_seed: int | None,
    shift: str = "permuted",
) -> list[Experience]:
    """The experiences of ``scenario`` (see the module docstring for the label conventions)."""
    if scenario == "domain":
        return domain_stream(train, test, n_experiences, shift, order_seed or 0)
    order = class_order(num_classes, order_seed)
    return class_split_stream(train, test, n_experiences, order, task_labels=scenario == "task")
