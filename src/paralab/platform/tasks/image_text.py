"""Image-text contrastive learning (CLIP): zero-shot accuracy from class-name prompts as the
headline, retrieval recall both ways beside it.

A batch is images with caption targets (N, 1 + P): the class id, then indices into the data's
caption list (:mod:`paralab.platform.data.captions`). The task tokenizes every caption once,
with the model's tokenizer, when the model is built; ``unpack`` picks one phrasing per image (a
random one while training, the first, full caption when evaluating: told apart by whether
autograd is on, as evaluation always runs under ``no_grad``), and in evaluation adds the
class-name prompts (``task.templates`` filled by
:func:`~paralab.platform.data.captions.class_prompts`, ensembled as CLIP does), so ``forward``
returns the zero-shot logits with the embeddings.

Scores over the whole evaluated split (torchmetrics gathers every process's rows under DDP):

- ``zero_shot_acc``: the class whose prompts are nearest each image, against its class id;
- ``i2t_r1``/``_r5``/``_r10``: for each image, whether its full caption is among the k nearest of
  the split's distinct full captions; ``t2i_r1``/``_r5``/``_r10``: for each distinct caption,
  whether an image it describes is among the k nearest images. ``i2t_r1_chance`` etc. are what a
  random ranking scores on the same split (k / captions; for t2i the hypergeometric chance of
  meeting one of the caption's images);
- ``i2t_r1_unseen``/``_r5_unseen``: image-to-text recall of the test images whose composition
  no training image shows (the caption sets' held-out (class, count) pairs), when there are any.

Training passes score nothing (their phrasings are random), so ``train/`` holds the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from paralab.platform.data.captions import class_prompts
from paralab.platform.tasks.base import Batch, Task, TaskConfig, register_task

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData

KS = (1, 5, 10)


@dataclass
class ImageTextConfig(TaskConfig):
    name: str = "image_text"
    #: zero-shot prompts, "{}" the class as captions name it (data.captions.nouns_for: "digit 3",
    #: "pair of trousers"); each class's embeddings are averaged
    templates: list[str] = field(
        default_factory=lambda: ["a photo of a {}", "a picture of a {}", "a {}"]
    )


class ImageTextOutput(NamedTuple):
    """The pairs' embeddings and temperature, and (evaluation) zero-shot logits (N, classes)."""

    image: torch.Tensor
    text: torch.Tensor
    logit_scale: torch.Tensor
    zero_shot: torch.Tensor | None


@register_task("image_text", config=ImageTextConfig)
class ImageText(Task):
    """CLIP's symmetric contrastive loss; zero-shot accuracy, retrieval recall@1/5/10."""

    headline = "zero_shot_acc"
    data_kind = "image_text"
    model_kind = "image_text"
    split_by = "class of the image"
    attacks = ("sign_flip", "gaussian")
    scenarios = ("class",)
    makes_inputs = True
    scores_training = False

    def __init__(self, cfg: ImageTextConfig, classes: list[str], label_smoothing: float = 0.0):
        super().__init__(cfg, classes, label_smoothing)
        self.captions: list[str] = []
        self.unseen_captions = torch.zeros(0, dtype=torch.long)
        self._tokens: torch.Tensor | None = None
        self._prompts: torch.Tensor | None = None

    def bind(self, data: ClassificationData) -> None:
        self.captions = list(data.captions or [])
        held = getattr(data.test, "held_out", None)
        if held is not None and held.any():  # full captions of compositions training never saw
            self.unseen_captions = data.test.targets[held, 1].unique()

    def build_model(self, config: ResolvedConfig, spec: Any) -> nn.Module:
        """The model, and the captions and prompts tokenized once with its tokenizer."""
        model = super().build_model(config, spec)
        self._tokens = model.tokenize(self.captions) if self.captions else None
        self._prompts = model.tokenize(class_prompts(self.classes, self.cfg.templates))
        return model

    def unpack(self, batch: Batch) -> tuple[tuple, torch.Tensor]:
        images, targets = batch[0], batch[1]
        if self._tokens is None or self._prompts is None:
            raise RuntimeError("build the model through the task (task.build_model) first")
        captions = targets[:, 1:]
        if torch.is_grad_enabled():  # training: a random phrasing per image
            count = (captions >= 0).sum(1)
            pick = (torch.rand(len(count), device=count.device) * count).long()
            chosen = captions.gather(1, pick[:, None]).squeeze(1)
            prompts = None
        else:
            chosen, prompts = captions[:, 0], self._prompts.to(images.device)
        tokens = self._tokens.to(images.device)[chosen]
        return (images, tokens, prompts), targets

    def forward(self, model: nn.Module, inputs: Any) -> ImageTextOutput:
        from paralab.platform.models.clip import zero_shot_logits

        images, tokens, prompts = inputs
        out = model(images, tokens)
        zero_shot = None
        if prompts is not None:
            classes = model.encode_classes(prompts, self.num_classes)
            zero_shot = zero_shot_logits(out.image, classes, out.logit_scale)
        return ImageTextOutput(out.image, out.text, out.logit_scale, zero_shot)

    def loss(self, outputs: ImageTextOutput, targets: torch.Tensor) -> torch.Tensor:
        from paralab.platform.models.clip import contrastive_loss

        # evaluation batches differ in size across processes: no gather there
        return contrastive_loss(
            outputs.image, outputs.text, outputs.logit_scale, gather=torch.is_grad_enabled()
        )

    def metrics(self):
        return image_text_metric(self.unseen_captions)

    def partition_labels(self, targets: torch.Tensor) -> torch.Tensor:
        return targets[:, 0]

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        """Each image, its full caption, and the nearest of the batch's full captions."""
        from paralab.platform.tasks.pictures import draw_image_text

        with torch.no_grad():
            (images, tokens, _), targets = self.unpack(batch)
            out = model(images, tokens)
        ids = targets[:, 1].tolist()
        nearest = (out.image @ out.text.T).argmax(1).tolist()
        truths = [self.captions[i] for i in ids]
        draw_image_text(images, truths, [truths[j] for j in nearest], path)

    def score(self, values: dict[str, float], classes: list[int] | None = None) -> float:
        return values[self.headline]


def recall_at(similarity: torch.Tensor, hits: torch.Tensor, k: int) -> torch.Tensor:
    """Per query (row), whether one of its hits (bool, same shape) is among its k best."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return hits.gather(1, top).any(1).float()


def chance_at(relevant: torch.Tensor, total: int, k: int) -> torch.Tensor:
    """Per query, the chance that a random ranking of ``total`` items puts one of its
    ``relevant`` items among the first k: 1 - C(total - r, k) / C(total, k)."""
    k = min(k, total)
    steps = torch.arange(k, dtype=torch.float64)
    miss = ((total - relevant.double()[:, None] - steps) / (total - steps)).clamp_min(0).prod(1)
    return 1 - miss


def image_text_metric(unseen_captions: torch.Tensor):
    """A torchmetrics Metric that keeps every evaluated pair's embeddings and scores them all
    at ``compute`` (module docstring); ``unseen_captions``: the held-out compositions' ids."""
    from torchmetrics import Metric

    class _ImageTextScores(Metric):
        full_state_update = False

        def __init__(self, unseen_captions: torch.Tensor) -> None:
            super().__init__()
            self.unseen = unseen_captions
            for name in ("image", "text", "caption", "label", "predicted"):
                self.add_state(name, default=[], dist_reduce_fx="cat")

        def update(self, outputs: ImageTextOutput, targets: torch.Tensor) -> None:
            if outputs.zero_shot is None:  # a training pass: nothing to score
                return
            self.image.append(outputs.image.detach().float())
            self.text.append(outputs.text.detach().float())
            self.caption.append(targets[:, 1])
            self.label.append(targets[:, 0])
            self.predicted.append(outputs.zero_shot.argmax(1))

        def compute(self) -> dict[str, torch.Tensor]:
            if not self.label:
                return {}
            cat = lambda v: torch.cat(v) if isinstance(v, list) else v  # noqa: E731
            image, text, caption = cat(self.image), cat(self.text), cat(self.caption)
            label, predicted = cat(self.label), cat(self.predicted)
            values = {"zero_shot_acc": (predicted == label).double().mean()}
            ids, first = _distinct(caption)
            gallery = text[first]  # one embedding per distinct full caption
            sim = image @ gallery.T  # (images, captions)
            i2t = caption[:, None] == ids[None]
            t2i = i2t.T
            per_caption = t2i.sum(1)
            unseen = torch.isin(caption, self.unseen.to(caption.device))
            for k in KS:
                values[f"i2t_r{k}"] = recall_at(sim, i2t, k).mean()
                values[f"t2i_r{k}"] = recall_at(sim.T, t2i, k).mean()
                values[f"i2t_r{k}_chance"] = chance_at(torch.ones(1), len(ids), k).mean()
                values[f"t2i_r{k}_chance"] = chance_at(per_caption, len(image), k).mean()
                if unseen.any() and k < 10:
                    values[f"i2t_r{k}_unseen"] = recall_at(sim[unseen], i2t[unseen], k).mean()
            return values

    return _ImageTextScores(unseen_captions)


def _distinct(caption: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct caption ids and, for each, the first row that holds it."""
    ids, inverse = caption.unique(return_inverse=True)
    rows = torch.arange(len(caption), device=caption.device)
    first = torch.full((len(ids),), len(caption), device=caption.device, dtype=torch.long)
    first.scatter_reduce_(0, inverse, rows, reduce="amin")
    return ids, first
