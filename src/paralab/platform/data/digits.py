"""scikit-learn's digits: 1,797 real 8x8 handwritten digits that ship inside the wheel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData, DataConfig, build_classification_data
from paralab.platform.data.registry import register_dataset


@dataclass
class DigitsConfig(DataConfig):
    test_fraction: float = bounded(0.2, gt=0, lt=1)


@register_dataset("digits", config=DigitsConfig, task="classification")
def digits(cfg: DigitsConfig) -> ClassificationData:
    """scikit-learn digits: 1,797 8x8 grey images, 10 classes, no download (the default)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    targets = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(1797))
    n_test = round(cfg.test_fraction * len(targets))
    test, train = order[:n_test], order[n_test:]
    return build_classification_data(
        "digits",
        [str(i) for i in range(10)],
        (images[train], targets[train]),
        (images[test], targets[test]),
        cfg,
    )
