"""Pooled backbone features of every image of a split, computed once for the probes.

Why: both probes read the same frozen features many times (a k-NN bank, a regression's
epochs), so they are computed once, batched through the in-memory sets' ``__getitems__``, in
eval mode (batch-norm running statistics, no dropout) and without gradients. The model's
``forward_features`` gives them (every paralab model, classifier or dense, has one); a bare
backbone is called as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paralab.platform.data.base import InMemoryImages, make_loader


def feature_function(
    model: nn.Module, stage: int | None = None, pool: int = 2
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.forward_features`` if it has one, else ``model.backbone``, else ``model``.

    ``stage`` (an index into ``model.feature_info``, negative from the end) reads that stage's
    map instead, average-pooled to ``pool`` x ``pool`` and flattened: the deepest features of a
    pretext-trained network are specialised to the pretext (Gidaris et al. 2018 probe their
    second block of four), so probes compare backbones at several depths.
    """
    if stage is not None:
        return lambda x: nn.functional.adaptive_avg_pool2d(
            model.forward_intermediates(x, [stage])[0], pool
        ).flatten(1)
    forward = getattr(model, "forward_features", None)
    if callable(forward):
        return forward
    backbone = getattr(model, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else model


def extract_features(
    model: nn.Module,
    images: InMemoryImages,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    stage: int | None = None,
    pool: int = 2,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) float32 and labels (N,) of ``images``, on ``device`` (where ``model``
    must be); ``stage`` and ``pool`` as in :func:`feature_function`, or ``forward`` (e.g. a
    CLIP model's ``encode_image``) called instead. The model is in eval mode meanwhile and
    left in the mode it was in."""
    if not len(images):
        raise ValueError("no images to compute features of")
    device = torch.device(device)
    forward = forward or feature_function(model, stage, pool)
    was_training = model.training
    model.eval()
    features, labels = [], []
    try:
        with torch.no_grad():
            for x, y in make_loader(images, batch_size, shuffle=False):
                features.append(forward(x.to(device)).float().flatten(1))
                labels.append(y.to(device))
    finally:
        model.train(was_training)
    return torch.cat(features), torch.cat(labels)
