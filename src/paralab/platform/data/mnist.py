"""MNIST and Fashion-MNIST from their idx files (plain or gzipped), or downloaded by torchvision."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from paralab.platform.data.base import ClassificationData, DataConfig, build_classification_data
from paralab.platform.data.locate import find_files, not_found, search_roots
from paralab.platform.data.registry import register_dataset

FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
FASHION_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format): magic, dims, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_idx_dataset(
    name: str,
    folder_name: str,
    classes: list[str],
    cfg: DataConfig,
    extra_roots: list[Path],
    torchvision_class: str,
    how_to_get: str,
) -> ClassificationData:
    roots = search_roots(cfg.root)
    candidates = [r / folder_name / "raw" for r in roots] + [r / folder_name for r in roots]
    candidates += extra_roots
    files = find_files(candidates, FILES)
    if files is None and cfg.download:
        import torchvision.datasets as tvd

        getattr(tvd, torchvision_class)(str(roots[0]), train=True, download=True)
        files = find_files([roots[0] / folder_name / "raw"], FILES)
    if files is None:
        raise not_found(name, candidates, how_to_get)
    arrays = [torch.from_numpy(read_idx(files[f]).copy()) for f in FILES]
    train = (arrays[0].unsqueeze(1), arrays[1])
    test = (arrays[2].unsqueeze(1), arrays[3])
    return build_classification_data(name, classes, train, test, cfg)


@register_dataset("fashion_mnist", config=DataConfig, task="classification")
def fashion_mnist(cfg: DataConfig) -> ClassificationData:
    """Fashion-MNIST: 60k/10k 28x28 grey clothing images, 10 classes."""
    return load_idx_dataset(
        "fashion_mnist",
        "FashionMNIST",
        FASHION_CLASSES,
        cfg,
        [DEBIAN_FASHION_MNIST],
        "FashionMNIST",
        "`apt-get install dataset-fashion-mnist` (Debian) or data.download=true",
    )


@register_dataset("mnist", config=DataConfig, task="classification")
def mnist(cfg: DataConfig) -> ClassificationData:
    """MNIST: 60k/10k 28x28 grey handwritten digits, 10 classes."""
    return load_idx_dataset(
        "mnist", "MNIST", [str(i) for i in range(10)], cfg, [], "MNIST", "data.download=true"
    )
