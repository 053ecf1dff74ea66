"""CIFAR-10 and CIFAR-100 from their python pickles, or downloaded by torchvision."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from paralab.platform.data.base import ClassificationData, DataConfig, build_classification_data
from paralab.platform.data.locate import not_found, search_roots
from paralab.platform.data.registry import register_dataset

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "label_names", b"labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names",
                 b"fine_labels", "CIFAR100"),
}  # fmt: skip


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _read(folder: Path, batches: list[str], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_unpickle(folder / b) for b in batches]
    images = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(p[label_key]) for p in parts])
    return torch.from_numpy(images.copy()), torch.from_numpy(labels).long()


def load_cifar(name: str, cfg: DataConfig) -> ClassificationData:
    folder_name, train_files, test_files, meta_file, names_key, label_key, tv_class = LAYOUT[name]
    roots = search_roots(cfg.root)
    candidates = [r / folder_name for r in roots]
    folder = next((c for c in candidates if (c / meta_file).is_file()), None)
    if folder is None and cfg.download:
        import torchvision.datasets as tvd

        getattr(tvd, tv_class)(str(roots[0]), train=True, download=True)
        folder = roots[0] / folder_name
    if folder is None:
        raise not_found(name, candidates, "data.download=true (about 170 MB)")
    meta = _unpickle(folder / meta_file)
    classes = [c.decode() if isinstance(c, bytes) else c for c in meta[names_key.encode()]]
    train = _read(folder, train_files, label_key)
    test = _read(folder, test_files, label_key)
    return build_classification_data(name, classes, train, test, cfg)


@register_dataset("cifar10", config=DataConfig, task="classification")
def cifar10(cfg: DataConfig) -> ClassificationData:
    """CIFAR-10: 50k/10k 32x32 colour images, 10 classes (download or a copy on disk)."""
    return load_cifar("cifar10", cfg)


@register_dataset("cifar100", config=DataConfig, task="classification")
def cifar100(cfg: DataConfig) -> ClassificationData:
    """CIFAR-100: 50k/10k 32x32 colour images, 100 fine classes (download or a copy on disk)."""
    return load_cifar("cifar100", cfg)
