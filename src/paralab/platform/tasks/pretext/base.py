"""What every pretext task shares: inputs made from the images, and a k-NN monitor.

A pretext task learns from images without their labels: ``unpack`` turns a batch of images
into the pretext's inputs and targets (four rotated copies and the angle; shuffled tiles and
the permutation; a grey image and its colour bins; two augmented views), so it runs under every
paradigm the way a supervised task does (Lightning, Avalanche through ``makes_inputs``, Flower
clients). The dataset's labels ride along in :class:`PretextTargets` for one purpose only: the
k-NN monitor (solo-learn's practice), which shows whether the backbone's features are getting
better at telling the classes apart while the pretext loss falls. It is the headline
(``val/knn_acc``), since the pretext accuracy itself says little about the features.

The monitor classifies each evaluated image by a weighted vote of its ``k`` nearest neighbours
among the *other* evaluated images (leave-one-out, cosine similarity, weights
``exp(sim / T)``, as in Wu et al. 2018 and solo-learn), on the features of the plain images
(computed in eval mode only). It keeps at most ``max_items`` images (the first ones seen), so a
10,000-image test split costs a 5,000 x 5,000 similarity, computed in row blocks.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from paralab.platform.probes.knn import knn_predict
from paralab.platform.tasks.base import Batch, Task


class PretextInputs(NamedTuple):
    """What the model sees: the pretext ``views``, and the ``plain`` images (for the monitor)."""

    views: torch.Tensor
    plain: torch.Tensor


class PretextTargets(NamedTuple):
    """The pretext targets (``pretext``) and the dataset labels (``labels``, monitor only)."""

    pretext: torch.Tensor
    labels: torch.Tensor


class PretextOutput(NamedTuple):
    """The pretext head's output (``logits``: whatever ``loss`` reads), and the pooled backbone
    features of the plain images (``features``; None in train mode)."""

    logits: torch.Tensor
    features: torch.Tensor | None


def knn_accuracy(
    features: torch.Tensor, labels: torch.Tensor, k: int = 20, temperature: float = 0.07
) -> float:
    """Leave-one-out weighted k-NN accuracy of ``features`` (N, D) against their ``labels``
    (the probes' k-NN, :func:`paralab.platform.probes.knn.knn_predict`, with the evaluated
    images as bank and queries)."""
    if len(features) < 2:
        return float("nan")
    predicted = knn_predict(features, labels, features, k, temperature, exclude_self=True)
    return float((predicted == labels.to(predicted.device)).float().mean())


def metric_classes():
    """The torchmetrics classes, built on first use (torchmetrics imports in ~1 s)."""
    from torchmetrics import Metric
    from torchmetrics.classification import MulticlassAccuracy

    class PretextAccuracy(MulticlassAccuracy):
        """Top-1 accuracy of the pretext head against the pretext targets."""

        def update(self, outputs: PretextOutput, targets: PretextTargets) -> None:
            super().update(outputs.logits, targets.pretext)

    class KNNMonitor(Metric):
        """Leave-one-out k-NN accuracy of the plain images' features (module docstring)."""

        full_state_update = False

        def __init__(self, k: int = 20, temperature: float = 0.07, max_items: int = 5000):
            super().__init__()
            self.k, self.temperature, self.max_items = k, temperature, max_items
            self.add_state("features", default=[], dist_reduce_fx="cat")
            self.add_state("labels", default=[], dist_reduce_fx="cat")
            self.kept = 0

        def update(self, outputs: PretextOutput, targets: PretextTargets) -> None:
            if outputs.features is None or self.kept >= self.max_items:
                return
            room = self.max_items - self.kept
            self.features.append(outputs.features[:room].detach().float())
            self.labels.append(targets.labels[:room].long())
            self.kept += min(room, len(targets.labels))

        def compute(self) -> torch.Tensor:
            features, labels = self.features, self.labels
            if isinstance(features, list):  # not synced: still the list of batches
                if not features:
                    return torch.tensor(float("nan"))
                features, labels = torch.cat(features), torch.cat(labels)
            value = knn_accuracy(features, labels, self.k, self.temperature)
            return torch.tensor(value)

        def reset(self) -> None:
            super().reset()
            self.kept = 0

    return PretextAccuracy, KNNMonitor


class PretextTask(Task):
    """A pretext objective over a labelled image dataset whose labels it does not train on.

    Subclasses give :meth:`make` (views and pretext targets from a batch of images) and
    :attr:`num_outputs` (the pretext head's size); a task whose head is not a linear layer on
    pooled features (colorization's per-pixel head, SimCLR's projection) overrides
    :meth:`build_model`, :meth:`forward` and :meth:`loss`.
    """

    headline = "knn_acc"
    data_kind = "classification"
    model_kind = "classification"
    split_by = "label (partitions and streams only: training never reads it)"
    attacks = ("sign_flip", "gaussian")  # no label to flip: the targets are made, not given
    scenarios = ("class", "domain")
    makes_inputs = True
    #: k of the k-NN monitor
    knn_k: ClassVar[int] = 20

    @property
    def train_score(self) -> str:
        return "pretext_acc"

    @property
    @abstractmethod
    def num_outputs(self) -> int:
        """The pretext head's output size (classes of the pretext problem)."""

    @abstractmethod
    def make(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pretext's views of ``images`` (N, C, H, W) and their targets."""

    def build_model(self, config: Any, spec: Any) -> nn.Module:
        """The registry model with a pretext head of :attr:`num_outputs` outputs."""
        from paralab.platform.models import MODELS, InputSpec

        spec = InputSpec(spec.in_channels, spec.image_size, self.num_outputs)
        return MODELS.get(config.model.name).obj(config.model, spec)

    def unpack(self, batch: Batch) -> tuple[PretextInputs, PretextTargets]:
        images, labels = batch[0], batch[1]
        views, pretext = self.make(images)
        return PretextInputs(views, images), PretextTargets(pretext, labels)

    def forward(self, model: nn.Module, inputs: PretextInputs) -> PretextOutput:
        logits = model.forward_head(model.forward_features(inputs.views))
        return PretextOutput(logits, self.monitor_features(model, inputs))

    def monitor_features(self, model: nn.Module, inputs: PretextInputs) -> torch.Tensor | None:
        """Pooled backbone features of the plain images, in eval mode only (the monitor's)."""
        if model.training:
            return None
        return model.forward_features(inputs.plain)

    def loss(self, outputs: PretextOutput, targets: PretextTargets) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs.logits, targets.pretext)

    def count(self, targets: PretextTargets) -> int:
        return len(targets.labels)

    def metrics(self):
        from torchmetrics import MetricCollection

        accuracy, monitor = metric_classes()
        return MetricCollection(
            {
                self.train_score: accuracy(self.num_outputs, average="micro", validate_args=False),
                "knn_acc": monitor(k=self.knn_k),
            },
            compute_groups=False,
        )

    def summarize(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        """Flat floats; the monitor's NaN (nothing evaluated: train metrics) is left out."""
        values = {k: float(v) for k, v in computed.items()}
        return {k: v for k, v in values.items() if v == v}

    def partition_labels(self, targets: torch.Tensor) -> torch.Tensor:
        return targets

    #: names of the pretext classes, for pictures
    def pretext_names(self) -> list[str]:
        return [str(i) for i in range(self.num_outputs)]

    def draw(self, model: nn.Module, batch: Batch, path) -> None:
        """The first views with their true and predicted pretext class."""
        from paralab.platform.tasks.pictures import draw_classification

        inputs, targets = self.unpack(batch)
        with torch.no_grad():
            predicted = self.forward(model, inputs).logits.argmax(1)
        draw_classification(inputs.views, targets.pretext, predicted, self.pretext_names(), path)
