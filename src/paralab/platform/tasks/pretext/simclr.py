"""SimCLR (Chen et al. 2020): two augmented views of each image, pulled together against the rest.

Why it is here: it is the modern joint-embedding reference the older pretext tasks (rotation,
jigsaw, colorization) are measured against, and its pieces are standard enough to take from
libraries rather than write: the NT-Xent loss and the projection head from lightly, the
augmentations from kornia (per-sample random parameters, drawn on the batch tensor on its
device, so a GPU run augments on the GPU and every paradigm gets views from ``unpack``).

Views: the images are de-normalised with the training set's mean and std (taken in
:meth:`SimCLR.bind`), augmented in [0, 1] (colour jitter assumes that range), and normalised
again. Each view gets a random resized crop (scale ``crop_scale_min``..1), a horizontal flip
(``flip``), colour jitter with probability 0.8 (strength ``jitter``: brightness, contrast and
saturation 0.8 s, hue 0.2 s; grey images get brightness and contrast only) and, for 3-channel
images, greyscale with probability 0.2; Gaussian blur (probability 0.5, kernel a tenth of the
side) only when ``blur`` is set, as SimCLR drops it for small (CIFAR-sized) images.

Model: the registry classifier with its linear head replaced by lightly's
``SimCLRProjectionHead`` (Linear-BN-ReLU-Linear-BN); the k-NN monitor reads the backbone's
pooled features, below the projection, which is what a downstream task would reuse. The views
go through the model as one batch of 2N (all first views, then all second views), so batch
norm sees both.

Loss: NT-Xent at ``temperature`` over the batch's 2N views (each view's positive is the other
view of its image, the 2N - 2 others are negatives). Under DDP training the negatives of every
process are gathered (lightly's ``gather_distributed``), as SimCLR does; evaluation stays
per process.

Metrics: the k-NN monitor (headline ``knn_acc``) and ``pair_acc``: the fraction of views whose
most similar other view (cosine, projections) is their positive. It and the loss depend on the
batch size (more views, more candidates: evaluation batches are larger than training ones), so
compare them only between runs with the same batch sizes. Evaluation views are random too
(drawn from torch's generator, like the training views); the k-NN monitor reads the plain
images and is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.models.base import Classifier
from paralab.platform.tasks.base import Batch, TaskConfig, register_task
from paralab.platform.tasks.pretext.base import (
    PretextOutput,
    PretextTargets,
    PretextTask,
    metric_classes,
)


@dataclass
class SimCLRConfig(TaskConfig):
    name: str = "simclr"
    temperature: float = bounded(0.5, ge=0.01, le=10)
    projection_dim: int = bounded(128, ge=1)
    hidden_dim: int | None = bounded(None, ge=1)  # null: the backbone's feature width
    crop_scale_min: float = bounded(0.2, gt=0, le=1)
    flip: bool = True
    jitter: float = bounded(0.5, ge=0, le=1)  # colour jitter strength s (0: none)
    blur: bool = False


def positive_index(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """For 2n views (n first views, then n second views), the index of each view's positive."""
    first = torch.arange(n, device=device)
    return torch.cat([first + n, first])


def nearest_other(projections: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the most cosine-similar other row."""
    z = nn.functional.normalize(projections.float(), dim=1)
    similarity = z @ z.T
    similarity.fill_diagonal_(-float("inf"))
    return similarity.argmax(1)


def build_augmentation(cfg: SimCLRConfig, channels: int, size: tuple[int, int]) -> nn.Sequential:
    """The kornia pipeline one view goes through (module docstring), for images in [0, 1]."""
    import kornia.augmentation as K

    steps: list[nn.Module] = [K.RandomResizedCrop(size, scale=(cfg.crop_scale_min, 1.0))]
    if cfg.flip:
        steps.append(K.RandomHorizontalFlip())
    s, colour = cfg.jitter, channels == 3
    if s > 0:
        saturation, hue = (0.8 * s, 0.2 * s) if colour else (0.0, 0.0)
        steps.append(K.ColorJitter(0.8 * s, 0.8 * s, saturation, hue, p=0.8))
    if colour:
        steps.append(K.RandomGrayscale(p=0.2))
    if cfg.blur:
        kernel = max(3, int(0.1 * min(size)) // 2 * 2 + 1)
        steps.append(K.RandomGaussianBlur(kernel, (0.1, 2.0), p=0.5))
    return nn.Sequential(*steps)


def _pair_accuracy_class():
    """A torchmetrics Metric for ``pair_acc``, built on first use (torchmetrics is slow to
    import)."""
    from torchmetrics import Metric

    class PairAccuracy(Metric):
        """Share of views whose nearest other view is their positive (``targets.pretext``)."""

        full_state_update = False

        def __init__(self) -> None:
            super().__init__()
            self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
            self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

        def update(self, outputs: PretextOutput, targets: PretextTargets) -> None:
            hits = nearest_other(outputs.logits.detach()) == targets.pretext
            self.correct += hits.sum()
            self.total += hits.numel()

        def compute(self) -> torch.Tensor:
            return self.correct.float() / self.total.clamp_min(1)

    return PairAccuracy


@register_task("simclr", config=SimCLRConfig)
class SimCLR(PretextTask):
    """SimCLR: NT-Xent between two augmented views (lightly's loss and projection head,
    kornia's augmentations); k-NN monitor and pair accuracy."""

    def __init__(self, cfg: SimCLRConfig, classes: list[str], label_smoothing: float = 0.0):
        super().__init__(cfg, classes, label_smoothing)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._augment: nn.Module | None = None
        self._criteria: dict[bool, nn.Module] = {}

    @property
    def train_score(self) -> str:
        return "pair_acc"

    @property
    def num_outputs(self) -> int:
        return self.cfg.projection_dim

    def bind(self, data: Any) -> None:
        """Keep the training set's normalisation, to augment in [0, 1]."""
        self.mean, self.std = data.train.mean.clone(), data.train.std.clone()

    # -- model -----------------------------------------------------------------------------------

    def build_model(self, config: Any, spec: Any) -> nn.Module:
        """The registry classifier with lightly's SimCLR projection head as its ``head`` (the
        base's forward then gives projections: ``forward_head(forward_features(views))``)."""
        from lightly.models.modules import SimCLRProjectionHead

        model = super().build_model(config, spec)
        if not isinstance(model, Classifier):
            raise ConfigError(
                f"task=simclr needs a classifier with a head on pooled features; "
                f"model={config.model.name} has none. Choose model=cnn, resnet18 or vit"
            )
        width = model.num_features
        hidden = self.cfg.hidden_dim or width
        head = SimCLRProjectionHead(width, hidden, self.cfg.projection_dim)
        model.head = head.to(next(model.parameters()).device)
        return model

    # -- one batch -------------------------------------------------------------------------------

    def make(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of each image, first views then second views, and the index of
        each view's positive."""
        mean, std = self._normalisation(images)
        pixels = (images * std + mean).clamp_(0, 1)
        augment = self._augmentation(images)
        views = torch.cat([augment(pixels), augment(pixels)])
        return (views - mean) / std, positive_index(len(images), images.device)

    def _normalisation(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("SimCLR.bind(data) must be called before views are made")
        view = (1, -1, 1, 1)
        return self.mean.view(view).to(images), self.std.view(view).to(images)

    def _augmentation(self, images: torch.Tensor) -> nn.Module:
        if self._augment is None:
            self._augment = build_augmentation(self.cfg, images.shape[1], tuple(images.shape[-2:]))
        return self._augment

    def loss(self, outputs: PretextOutput, targets: PretextTargets) -> torch.Tensor:
        z = outputs.logits
        n = len(z) // 2
        return self._criterion(gather=torch.is_grad_enabled() and z.requires_grad)(z[:n], z[n:])

    def _criterion(self, gather: bool) -> nn.Module:
        """lightly's NT-Xent; ``gather``: negatives from every DDP process (training only)."""
        gather = gather and torch.distributed.is_available() and torch.distributed.is_initialized()
        if gather not in self._criteria:
            from lightly.loss import NTXentLoss

            self._criteria[gather] = NTXentLoss(self.cfg.temperature, gather_distributed=gather)
        return self._criteria[gather]

    # -- judging ---------------------------------------------------------------------------------

    def metrics(self):
        from torchmetrics import MetricCollection

        _, monitor = metric_classes()
        return MetricCollection(
            {"pair_acc": _pair_accuracy_class()(), "knn_acc": monitor(k=self.knn_k)},
            compute_groups=False,
        )

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        """Rows: the first images, their first views, their second views; a second view's
        title says whether the first view's nearest other view (in this batch) is it."""
        inputs, targets = self.unpack(batch)
        with torch.no_grad():
            nearest = nearest_other(self.forward(model, inputs).logits)
        mean, std = self._normalisation(inputs.plain)
        n = len(inputs.plain)
        rows = [inputs.plain, inputs.views[:n], inputs.views[n:]]
        pixels = [(r * std + mean).clamp(0, 1) for r in rows]
        found = (nearest[:n] == targets.pretext[:n]).tolist()
        draw_views(pixels, found, path)


def draw_views(rows: list[torch.Tensor], found: list[bool], path: Path) -> None:
    """Images in [0, 1] in three rows (image, view 1, view 2); "pair found" or "missed" (red)
    above each second view."""
    from paralab.platform.tasks.pictures import MAX_IMAGES, figure, save_figure

    n = min(MAX_IMAGES, len(rows[0]))
    plt, fig, axes = figure(len(rows), n)
    for row, images in enumerate(rows):
        for i in range(n):
            x = images[i].detach().float().cpu()
            if x.shape[0] == 1:
                axes[row, i].imshow(x[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                axes[row, i].imshow(x[:3].permute(1, 2, 0).numpy())
    for i in range(n):
        axes[2, i].set_title("pair found" if found[i] else "missed", fontsize=7,
                             color="black" if found[i] else "red")  # fmt: skip
    for row, label in enumerate(("image", "view 1", "view 2")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    save_figure(plt, fig, path)
