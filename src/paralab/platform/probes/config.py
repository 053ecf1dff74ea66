"""The ``probe`` section of a run config: whether a run ends with frozen-feature probes, and how.

Why a section of its own: probing is independent of the paradigm, task and model, like
``tracking``; every run (and ``paralab probe``) reads the same settings. Defaults follow common
practice for self-supervised evaluation (k-NN with k=20, T=0.07; a linear probe trained for 100
epochs) and are cheap on the CPU datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

from paralab.platform.bounds import bounded


@dataclass
class ProbeConfig:
    """``enabled``: probe the trained backbone at the end of the run (its ``probe/...`` metrics
    join the summary). ``train_limit``: probe with a seeded subset of this many training images
    (null: all). ``batch_size``: images per forward pass when computing features. ``stage``:
    probe that backbone stage's map, average-pooled to ``pool`` x ``pool`` (null: the pooled
    output features every paradigm trains on). ``data``: probe on this registered
    classification dataset (its default options) instead of the run's data, its images shown
    to the model as the run's were (``fit``: ``pad`` centres them on a black canvas of the
    run's image size, shrinking only what is larger, as the canvas sets paste items;
    ``resize`` scales them to it; channels are repeated or averaged; the run's normalisation).
    ``zero_shot``: also classify the test images by class-name prompts (``task.templates``),
    for a model with a text tower (``clip``): ``probe/zero_shot_acc``."""

    enabled: bool = False
    linear: bool = True
    knn: bool = True
    knn_k: int = bounded(20, ge=1)
    knn_temperature: float = bounded(0.07, gt=0)
    linear_epochs: int = bounded(100, ge=1)
    linear_lr: float = bounded(0.01, gt=0)
    linear_weight_decay: float = bounded(1e-4, ge=0)
    linear_batch_size: int = bounded(256, ge=1)
    train_limit: int | None = bounded(None, ge=1)
    batch_size: int = bounded(512, ge=1)
    stage: int | None = None  # a backbone stage (index, negative from the end); null: output
    pool: int = bounded(2, ge=1, le=16)  # with stage: the map is average-pooled to pool x pool
    data: str | None = None  # a classification dataset to probe on (null: the run's data)
    fit: str = bounded("pad", choices=("pad", "resize"))  # with data: to the run's image size
    zero_shot: bool = False  # also zero-shot accuracy from class-name prompts (clip)
