"""``data.label_fraction``: fine-tuning with a share of the training labels.

Why a seeded, class-balanced, nested subset: label-efficiency curves compare backbones at 1%,
10% and 100% of the labels, which only means something when every class keeps its share, the
same seed picks the same images, and the 1% images lie inside the 10% ones.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from paralab.errors import ConfigError

if TYPE_CHECKING:
    from paralab.platform.data.base import DataConfig

log = logging.getLogger(__name__)


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Positions into ``labels`` (sorted) of a class-balanced part: of each class's ``n_c``
    examples, ``max(1, round(fraction * n_c))``, the first ones in a seeded order.

    The order depends on ``seed`` and the labels only, so the same seed gives the same part,
    and a smaller fraction's part lies inside a larger one's (1% of the labels within 10%).
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    ordered = labels[order]
    kept = []
    for c in torch.unique(labels).tolist():
        members = order[ordered == c]
        kept.append(members[: max(1, round(fraction * len(members)))])
    return torch.cat(kept).sort().values


def labelled(name: str, targets: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """:func:`label_subset` of the training split for ``data.label_fraction``, seeded by
    ``data.split_seed``; refused for masks (a fraction of images is not a fraction of
    labelled pixels)."""
    if targets.ndim != 1:
        raise ConfigError(
            f"data.label_fraction={cfg.label_fraction}: {name} holds segmentation masks; the "
            "fraction of labels applies to class labels. Set data.label_fraction=null, or "
            "data.train_limit=<images> for fewer training images"
        )
    kept = label_subset(targets, float(cfg.label_fraction), cfg.split_seed)
    log.info(
        "data.label_fraction=%s: %d of %d training images keep their labels (%d classes)",
        cfg.label_fraction, len(kept), len(targets), len(torch.unique(targets)),
    )  # fmt: skip
    return kept
