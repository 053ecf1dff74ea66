"""The probe protocol: features of the training split fit the probes, the test split scores them.

Why one function: the end of a run, ``paralab probe`` on a run folder and the random-init
baseline must measure the same thing to be compared. The training images are the data's
``train`` split without augmentation (optionally a seeded subset of ``train_limit`` images); the
test images are its ``test`` split; labels are the dataset's classes, whatever the run trained
on (a pretext task never read them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from paralab.platform.data.base import ClassificationData, InMemoryImages
from paralab.platform.probes.config import ProbeConfig
from paralab.platform.probes.features import extract_features
from paralab.platform.probes.knn import knn_probe
from paralab.platform.probes.linear import linear_probe
from paralab.platform.probes.zero_shot import zero_shot_accuracy

log = logging.getLogger(__name__)


def probe(
    model: nn.Module,
    data: ClassificationData,
    cfg: ProbeConfig,
    device: str | torch.device = "cpu",
    seed: int = 0,
    templates: Sequence[str] = (),
) -> dict[str, float]:
    """``probe/linear_acc``, ``probe/linear_train_acc``, ``probe/knn_acc`` and
    ``probe/zero_shot_acc`` (those that ``cfg`` turns on; zero-shot prompts from
    ``templates``) of ``model``'s features, with ``probe/features`` (their size),
    ``probe/train_images``, ``probe/test_images`` and ``probe/time_s``. ``model`` must be on
    ``device``; ``seed`` picks the training subset and the linear probe's batch order."""
    started = time.perf_counter()
    test = plain_images(data.test)
    metrics = {"probe/test_images": float(len(test))}
    if cfg.knn or cfg.linear:
        metrics.update(_feature_probes(model, data, test, cfg, device, seed))
    if cfg.zero_shot:
        metrics["probe/zero_shot_acc"] = zero_shot_accuracy(
            model, test, data.classes, templates, cfg.batch_size, device
        )
    metrics["probe/time_s"] = round(time.perf_counter() - started, 3)
    log.debug("probe of %s on %s: %s", type(model).__name__, data.name, metrics)
    return metrics


def _feature_probes(
    model: nn.Module,
    data: ClassificationData,
    test: InMemoryImages,
    cfg: ProbeConfig,
    device: str | torch.device,
    seed: int,
) -> dict[str, float]:
    """The k-NN and linear probes that ``cfg`` turns on, on frozen features."""
    train = plain_images(data.train, cfg.train_limit, seed)
    where = {"stage": cfg.stage, "pool": cfg.pool}
    train_f, train_y = extract_features(model, train, cfg.batch_size, device, **where)
    test_f, test_y = extract_features(model, test, cfg.batch_size, device, **where)
    metrics = {"probe/features": float(train_f.shape[1]), "probe/train_images": float(len(train_f))}
    if cfg.knn:
        metrics["probe/knn_acc"] = knn_probe(
            train_f, train_y, test_f, test_y, cfg.knn_k, cfg.knn_temperature
        )
    if cfg.linear:
        fit = linear_probe(
            train_f, train_y, test_f, test_y, epochs=cfg.linear_epochs, lr=cfg.linear_lr,
            weight_decay=cfg.linear_weight_decay, batch_size=cfg.linear_batch_size, seed=seed,
        )  # fmt: skip
        metrics.update({"probe/linear_acc": fit.test_acc, "probe/linear_train_acc": fit.train_acc})
    return metrics


def plain_images(images: InMemoryImages, limit: int | None = None, seed: int = 0) -> InMemoryImages:
    """``images`` without augmentation; with ``limit`` below their number, a subset of that
    many chosen by ``seed`` (the same subset for every probe of the same data and seed)."""
    if limit is None or limit >= len(images):
        mean, std = images.mean.flatten(), images.std.flatten()
        return InMemoryImages(images.images, images.targets, mean, std)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(images), generator=generator)[:limit].sort().values
    return images.subset(chosen, augment=False)


def describe(metrics: dict[str, float]) -> str:
    """One line for people: the accuracies, then sizes and time."""
    names = ("probe/linear_acc", "probe/knn_acc", "probe/zero_shot_acc")
    parts = [f"{k}={metrics[k]:.4f}" for k in names if k in metrics]
    sizes = ", ".join(
        f"{int(metrics[k])} {k.split('/', 1)[1].replace('_', ' ')}"
        for k in ("probe/features", "probe/train_images", "probe/test_images")
        if k in metrics
    )
    return f"{'  '.join(parts)}  ({sizes}; {metrics['probe/time_s']:.1f} s)"
