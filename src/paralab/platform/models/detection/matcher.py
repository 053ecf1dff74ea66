"""DETR's set-prediction loss: a one-to-one Hungarian matching of queries to objects, then a
classification loss on every query and box losses on the matched ones.

Why matching: a set predictor emits ``Q`` (class, box) slots in no order, so there is no fixed
slot for an object. Each image's slots are paired with its objects by the assignment of least
total cost (:func:`hungarian_match`, scipy's ``linear_sum_assignment``), where pairing query q
with object t costs ``w_class * -p_q(class_t) + w_l1 * |box_q - box_t|_1 + w_giou * -GIoU``
(boxes normalised cxcywh). The matched queries learn their object's class and box, the others
the extra "no object" class. Each object takes one query, so duplicates are penalised by the
loss itself and no NMS is needed.

:class:`SetCriterion` follows DETR's reference ``SetCriterion`` (github.com/facebookresearch/detr,
``models/detr.py``): cross-entropy over ``C + 1`` classes with the "no object" class weighted by
``eos_coef`` (a weighted mean, as ``F.cross_entropy`` with ``weight`` gives), and the L1 and
GIoU losses summed over matched pairs and divided by the number of objects (at least 1). The
terms come out weighted (``loss_ce``, ``loss_bbox``, ``loss_giou``), so their sum is the
objective. Unlike the reference, the object count is not averaged over DDP processes: each
process normalises by its own count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# torchvision.ops and scipy are imported where they are used: torchvision.ops imports
# torch._dynamo (about 1.2 s here), which every process that loads the model registry (the CLI,
# each federated worker) would pay.
Match = tuple[torch.Tensor, torch.Tensor]  # (query indices, object indices), both long


@dataclass(frozen=True)
class LossWeights:
    """Each term's weight, in the matching cost and in the loss alike (DETR's defaults)."""

    ce: float = 1.0
    l1: float = 5.0
    giou: float = 2.0


def normalise_targets(
    targets: list[dict[str, torch.Tensor]], image_size: tuple[int, int]
) -> list[dict[str, torch.Tensor]]:
    """Per-image ``{"boxes": xyxy pixels, "labels"}`` -> boxes as cxcywh fractions of the
    ``(height, width)`` image, the predictions' form."""
    from torchvision.ops import box_convert

    h, w = image_size
    out = []
    for t in targets:
        boxes = t["boxes"].float()
        scale = boxes.new_tensor([w, h, w, h])
        out.append(
            {"labels": t["labels"].long(), "boxes": box_convert(boxes / scale, "xyxy", "cxcywh")}
        )
    return out


@torch.no_grad()
def hungarian_match(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
    weights: LossWeights = LossWeights(),
) -> list[Match]:
    """Each image's least-cost one-to-one pairing of queries with objects.

    ``logits`` (N, Q, C+1), ``boxes`` (N, Q, 4) normalised cxcywh, ``targets`` as
    :func:`normalise_targets` gives. The cost of the whole batch is computed at once, then split
    per image; an image without objects gets empty indices. Raises ``ValueError`` when an image
    has more objects than there are queries.
    """
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import generalized_box_iou

    n, q = logits.shape[:2]
    sizes = [len(t["boxes"]) for t in targets]
    most = max(sizes, default=0)
    if most > q:
        raise ValueError(
            f"an image has {most} objects but the detector has {q} queries (one per object). "
            f"Set model.num_queries={most} or more"
        )
    empty = torch.empty(0, dtype=torch.long)
    if most == 0:
        return [(empty, empty) for _ in range(n)]
    labels = torch.cat([t["labels"] for t in targets])
    tboxes = torch.cat([t["boxes"] for t in targets]).to(boxes.dtype)
    prob = logits.flatten(0, 1).softmax(-1)  # (N*Q, C+1)
    pboxes = boxes.flatten(0, 1)
    cost = (
        -weights.ce * prob[:, labels]
        + weights.l1 * torch.cdist(pboxes, tboxes, p=1)
        - weights.giou * generalized_box_iou(_xyxy(pboxes), _xyxy(tboxes))
    )
    cost = cost.view(n, q, -1).float().cpu()
    matches = []
    for i, c in enumerate(cost.split(sizes, -1)):
        if sizes[i] == 0:
            matches.append((empty, empty))
            continue
        rows, cols = linear_sum_assignment(c[i].numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols)))
    return matches


class SetCriterion(nn.Module):
    """DETR's loss for one decoder layer's predictions (module docstring)."""

    def __init__(
        self, num_classes: int, weights: LossWeights = LossWeights(), eos_coef: float = 0.1
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weights = weights
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        # not persistent: no tensor for checkpoints or federated averaging to carry
        self.register_buffer("class_weight", class_weight, persistent=False)

    def forward(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """``logits`` (N, Q, C+1), ``boxes`` (N, Q, 4) normalised cxcywh, ``targets`` as
        :func:`normalise_targets` gives -> the weighted ``loss_ce``, ``loss_bbox``,
        ``loss_giou``."""
        from torchvision.ops import generalized_box_iou_loss

        matches = hungarian_match(logits, boxes, targets, self.weights)
        batch = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)])
        query = torch.cat([q for q, _ in matches]).to(logits.device)
        batch = batch.to(logits.device)

        classes = torch.full(logits.shape[:2], self.num_classes, device=logits.device)
        matched_labels = [
            t["labels"][o.to(t["labels"].device)]
            for t, (_, o) in zip(targets, matches, strict=True)
        ]
        classes[batch, query] = torch.cat(matched_labels).to(logits.device)
        ce = F.cross_entropy(logits.transpose(1, 2), classes, self.class_weight.to(logits.dtype))

        count = max(sum(len(t["boxes"]) for t in targets), 1)
        pred = boxes[batch, query]  # an empty selection keeps the box head in the graph
        true = torch.cat(
            [
                t["boxes"][o.to(t["boxes"].device)]
                for t, (_, o) in zip(targets, matches, strict=True)
            ]
        ).to(pred)
        l1 = F.l1_loss(pred, true, reduction="sum") / count
        giou = generalized_box_iou_loss(_xyxy(pred), _xyxy(true), reduction="sum") / count
        w = self.weights
        return {"loss_ce": w.ce * ce, "loss_bbox": w.l1 * l1, "loss_giou": w.giou * giou}


def _xyxy(boxes: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_convert

    return box_convert(boxes, "cxcywh", "xyxy")
