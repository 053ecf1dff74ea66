"""In-memory image data (class labels or per-pixel masks): the one shape every paradigm consumes.

Images are kept as uint8 tensors and normalised per batch, so a dataset costs one byte per pixel
in every process that holds it (Ray workers included). Segmentation masks are kept as uint8 too
(60k 64x64 masks are 245 MB, not 2 GB as int64) and widened to long per batch. ``__getitems__``
returns a whole batch in one indexing operation; :func:`make_loader` pairs it with a pass-through
collate, which keeps the data path as cheap as slicing tensors in a plain PyTorch loop. Class
labels take exactly the path they always took: the mask branch costs them one attribute test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded, limits
from paralab.platform.data.augment import IGNORE_INDEX, augment_batch, augment_with_masks
from paralab.platform.data.labels import labelled

AUGMENTATIONS = ("hflip", "crop")


@dataclass
class DataConfig:
    """Options every dataset takes; a dataset with more options subclasses this."""

    name: str = "digits"
    root: str | None = None
    download: bool = False
    val_fraction: float = bounded(0.1, ge=0, lt=1)  # 0: no validation split
    split_seed: int = bounded(0, ge=0)
    train_limit: int | None = bounded(None, ge=1)
    #: Train on this fraction of the labels (fine-tuning with few labels): a seeded,
    #: class-balanced part of the training split (see :func:`label_subset`); null: all.
    label_fraction: float | None = bounded(None, gt=0, le=1)
    batch_size: int = bounded(128, ge=1)
    eval_batch_size: int = bounded(512, ge=1)
    num_workers: int = bounded(0, ge=0)
    augment: list[str] = field(default_factory=list, metadata=limits(choices=AUGMENTATIONS))


class InMemoryImages(Dataset):
    """Images (N, C, H, W) uint8 and targets: class labels (N,) or class masks (N, H, W).

    Items are normalised float images with long targets. Masks are stored as uint8 (values are
    class ids or :data:`IGNORE_INDEX`) and get the same flip and crop as their images.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: Sequence[str] = (),
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        self.images = images
        self.has_masks = targets.ndim == 3
        if self.has_masks:
            if targets.shape != (images.shape[0], *images.shape[2:]):
                raise ValueError(
                    f"masks of shape {tuple(targets.shape)} do not match images of shape "
                    f"{tuple(images.shape)}: masks must be (N, H, W)"
                )
            if targets.dtype != torch.uint8 and (targets.min() < 0 or targets.max() > 255):
                raise ValueError("mask values must be class ids in 0..254, or 255 (ignore)")
            self.targets = targets.to(torch.uint8)
        else:
            self.targets = targets.long()
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)
        self.augment = tuple(augment)

    def __len__(self) -> int:
        return len(self.targets)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        return augment_batch(x, self.augment) if self.augment else x

    def _with_masks(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.float() / 255.0 - self.mean) / self.std
        if self.augment:
            x, masks = augment_with_masks(x, masks, self.augment)
        return x, masks.long()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.has_masks:
            x, y = self._with_masks(self.images[index : index + 1], self.targets[index : index + 1])
            return x[0], y[0]
        return self._normalise(self.images[index : index + 1])[0], self.targets[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.has_masks:
            return self._with_masks(self.images[index], self.targets[index])
        return self._normalise(self.images[index]), self.targets[index]

    def __reduce__(self):
        """Pickled with its tensors as numpy arrays: Ray's object store then hands every worker
        of a node one shared copy (zero-copy), where a pickled tensor is copied into each."""
        state = {
            k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()
        }
        return _rebuild, (type(self), state)

    def subset(self, indices: Sequence[int] | torch.Tensor, augment: bool = True) -> InMemoryImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return InMemoryImages(
            self.images[index],
            self.targets[index],
            self.mean.flatten(),
            self.std.flatten(),
            self.augment if augment else (),
        )


def _rebuild(cls: type, state: dict) -> InMemoryImages:
    """The inverse of ``InMemoryImages.__reduce__``: tensors over the arrays, no copy. Arrays
    from Ray's object store are read-only; the dataset never writes into its tensors."""
    import warnings

    import numpy as np

    dataset = cls.__new__(cls)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        dataset.__dict__.update(
            {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}
        )
    return dataset


@dataclass
class ClassificationData:
    """A dataset's three splits plus what a model needs to know about its inputs.

    For ``task="segmentation"`` targets are masks, ``classes[0]`` is ``"background"`` and
    ``ignore_index`` is :data:`IGNORE_INDEX` when masks can hold void pixels (else None).
    For ``task="image_text"`` ``captions`` holds every distinct caption (targets index it).
    """

    name: str
    classes: list[str]
    train: InMemoryImages
    val: InMemoryImages
    test: InMemoryImages
    task: str = "classification"
    ignore_index: int | None = None
    captions: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[-2:])  # type: ignore[return-value]


ImageData = ClassificationData  # the name that says it holds masks too


def build_classification_data(
    name: str,
    classes: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: DataConfig,
) -> ClassificationData:
    """Split a validation set off the training images (seeded) and wrap all splits."""
    return build_splits(name, classes, train, test, cfg)


def build_segmentation_data(
    name: str,
    classes: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: DataConfig,
    ignore_index: int | None = None,
) -> ClassificationData:
    """:func:`build_classification_data` for images (uint8 NCHW) with masks (uint8 NHW) whose
    values are indices into ``classes`` (``classes[0] == "background"``) or ``ignore_index``.
    A crop augmentation pads in void pixels, so it sets ``ignore_index`` to IGNORE_INDEX."""
    if not classes or classes[0] != "background":
        raise ValueError(f"segmentation classes must start with 'background', not {classes[:1]}")
    if "crop" in cfg.augment:
        ignore_index = IGNORE_INDEX
    for split, (images, masks) in (("train", train), ("test", test)):
        if masks.dtype != torch.uint8 or masks.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(
                f"{name} {split}: masks must be uint8 (N, H, W) matching images "
                f"{tuple(images.shape)}, not {masks.dtype} {tuple(masks.shape)}"
            )
        counts = torch.bincount(masks.flatten(), minlength=256)
        counts[: len(classes)] = 0
        if ignore_index is not None:
            counts[ignore_index] = 0
        if counts.any():
            bad = counts.nonzero().flatten().tolist()
            raise ValueError(f"{name} {split}: mask values {bad} are not class ids or ignored")
    data = build_splits(name, classes, train, test, cfg)
    data.task, data.ignore_index = "segmentation", ignore_index
    return data


def build_splits(
    name: str,
    classes: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: DataConfig,
    split_type: type[InMemoryImages] = InMemoryImages,
) -> ClassificationData:
    images, targets = train
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val = round(cfg.val_fraction * len(targets))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if cfg.train_limit is not None:
        train_idx = train_idx[: cfg.train_limit]
    if len(train_idx) == 0 or len(test[1]) == 0:
        split = "training" if len(train_idx) == 0 else "test"
        raise ConfigError(
            f"data: the {split} split of {name} is empty ({len(targets)} training and "
            f"{len(test[1])} test images, data.val_fraction={cfg.val_fraction}). Lower the "
            "fractions that split it off, or give more images"
        )
    mean, std = channel_stats(images[train_idx])  # every training image, labelled or not
    if cfg.label_fraction is not None:
        train_idx = train_idx[labelled(name, targets[train_idx], cfg)]
    train_images = images[train_idx]
    return ClassificationData(
        name=name,
        classes=list(classes),
        train=split_type(train_images, targets[train_idx], mean, std, cfg.augment),
        val=split_type(images[val_idx], targets[val_idx], mean, std),
        test=split_type(test[0], test[1], mean, std),
    )


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = images.float().div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1), x.std(1).clamp_min(1e-6)


class EpochSeededSampler(Sampler[int]):
    """A random permutation that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch, so a run resumed at epoch k sees exactly
    the batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(self.size, generator=generator).tolist()

    def __len__(self) -> int:
        return self.size


def pass_through(batch):
    """Collate for datasets whose ``__getitems__`` already returns a stacked batch."""
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    collate: Callable[[list], Any] | None = None,
) -> DataLoader:
    """Batches of ``dataset``: whole batches from its ``__getitems__`` when it has one (the
    in-memory sets), else items joined by ``collate`` (a task's :meth:`Task.collate`; torch's
    default when None)."""
    batched = hasattr(dataset, "__getitems__")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSeededSampler(len(dataset), seed) if shuffle else None,
        num_workers=num_workers,
        collate_fn=pass_through if batched else collate,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
