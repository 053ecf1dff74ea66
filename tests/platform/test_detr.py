"""DETR: Hungarian matching and the set loss on hand-made cases, the calling convention of a
paralab detector, and a short overfit."""

import math

import pytest
import torch

from paralab.errors import ConfigError
from paralab.platform.config import validate_section
from paralab.platform.models import MODELS, InputSpec
from paralab.platform.models.detection.detr import sine_positions
from paralab.platform.models.detection.matcher import (
    LossWeights,
    SetCriterion,
    hungarian_match,
    normalise_targets,
)

SMALL = {"backbone": {"name": "cnn", "channels": [8, 16, 32]}, "feature_levels": 1}


def build(spec: InputSpec, **options) -> torch.nn.Module:
    entry = MODELS.get("detr")
    values = {"name": "detr", **SMALL, **options}
    return entry.obj(validate_section("model", values, entry.config), spec)


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def test_hungarian_matching_finds_the_permutation():
    # Object 0 sits where query 2 points, object 1 where query 0 does; query 1 is far off.
    objects = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    boxes = torch.tensor([[[0.71, 0.6, 0.3, 0.38], [0.5, 0.9, 0.05, 0.05], [0.26, 0.24, 0.2, 0.2]]])
    logits = torch.zeros(1, 3, 3)  # 2 classes + "no object", all equally likely
    matches = hungarian_match(logits, boxes, [{"labels": torch.tensor([0, 1]), "boxes": objects}])
    ((queries, found),) = matches
    assert queries.tolist() == [0, 2] and found.tolist() == [1, 0]

    # The class cost alone decides when the boxes are equal: query 1 is sure of class 1.
    same = objects[:1].expand(1, 3, 4)
    logits = torch.zeros(1, 3, 3)
    logits[0, 1, 1] = 5.0
    ((queries, found),) = hungarian_match(
        logits, same, [{"labels": torch.tensor([1]), "boxes": objects[:1]}]
    )
    assert queries.tolist() == [1] and found.tolist() == [0]


def test_the_set_loss_on_perfect_boxes_is_the_weighted_cross_entropy():
    size = (40, 80)  # (height, width)
    targets = normalise_targets([target([[8, 4, 40, 20]], [1])], size)
    assert torch.allclose(targets[0]["boxes"], torch.tensor([[0.3, 0.3, 0.4, 0.4]]))
    boxes = torch.tensor([[[0.3, 0.3, 0.4, 0.4], [0.8, 0.8, 0.1, 0.1], [0.1, 0.8, 0.1, 0.1]]])
    logits = torch.zeros(1, 3, 3)
    logits[0, 0, 1] = math.log(2)  # query 0: p(class 1) = 2 / 4
    losses = SetCriterion(2, LossWeights(), eos_coef=0.1)(logits, boxes, targets)
    assert losses["loss_bbox"].abs() < 1e-5 and losses["loss_giou"].abs() < 1e-5
    # matched query: -log(1/2), weight 1; the two others: -log(1/3) as "no object", weight 0.1
    expected = (math.log(2) + 2 * 0.1 * math.log(3)) / (1 + 2 * 0.1)
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-5)

    weighted = SetCriterion(2, LossWeights(ce=2.0), eos_coef=0.1)(logits, boxes, targets)
    assert weighted["loss_ce"].item() == pytest.approx(2 * expected, rel=1e-5)


def test_images_without_objects_give_empty_matches_and_a_connected_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, requires_grad=True)
    boxes = torch.rand(2, 4, 4, requires_grad=True)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    matches = hungarian_match(logits, boxes, empty)
    assert [(len(q), len(o)) for q, o in matches] == [(0, 0), (0, 0)]
    losses = SetCriterion(2)(logits, boxes, empty)
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.full((8,), 2))
    assert torch.allclose(losses["loss_ce"], expected)
    sum(losses.values()).backward()
    assert boxes.grad is not None  # the box head stays in the graph (DDP waits for it)

    one = [empty[0], {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    matches = hungarian_match(logits, boxes, one)
    assert len(matches[0][0]) == 0 and len(matches[1][0]) == 1


def test_more_objects_than_queries_is_refused_with_the_fix():
    logits, boxes = torch.zeros(1, 2, 3), torch.rand(1, 2, 4)
    crowd = [{"labels": torch.zeros(3, dtype=torch.long), "boxes": torch.rand(3, 4)}]
    with pytest.raises(ValueError, match=r"3 objects.*2 queries.*model\.num_queries=3"):
        SetCriterion(2)(logits, boxes, crowd)


def test_sine_positions_are_distinct_and_bounded():
    pos = sine_positions(3, 5, 16)
    assert pos.shape == (15, 16) and pos.abs().max() <= 1
    assert len({tuple(row.tolist()) for row in pos}) == 15


def test_config_errors_name_the_fix():
    spec = InputSpec(1, (32, 32), 3)
    with pytest.raises(ConfigError, match=r"model\.hidden_dim=48"):
        build(spec, hidden_dim=40, heads=3)
    with pytest.raises(ConfigError, match=r"model\.level=-1"):
        build(spec, level=1)


def test_training_gives_losses_and_eval_gives_detections():
    torch.manual_seed(0)
    spec = InputSpec(1, (32, 24), 3)
    model = build(spec, num_queries=5, detections_per_image=4, score_threshold=0.0)
    images = torch.randn(3, 1, 32, 24)
    targets = [target([[2, 3, 12, 20]], [2]), target([], []), target([[0, 0, 24, 32]] * 2, [0, 1])]

    out = model.train()(images, targets)
    assert out.detections is None
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_giou_0"} <= set(out.losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()
    assert model.class_head.weight.grad is not None and model.box_head[0].weight.grad is not None
    with pytest.raises(ValueError, match="needs targets"):
        model(images)

    model.eval()
    with torch.no_grad():
        plain, scored = model(images), model(images, targets)
    assert plain.losses == {} and set(scored.losses) == set(out.losses)
    assert len(plain.detections) == 3
    for found in plain.detections:
        assert set(found) == {"boxes", "scores", "labels"}
        assert found["boxes"].shape == (len(found["scores"]), 4) and len(found["scores"]) <= 4
        b = found["boxes"]
        assert (b >= 0).all() and (b[:, [0, 2]] <= 24).all() and (b[:, [1, 3]] <= 32).all()
        assert (b[:, 2:] >= b[:, :2]).all()
        assert ((found["scores"] > 0) & (found["scores"] <= 1)).all()
        assert ((found["labels"] >= 0) & (found["labels"] < 3)).all()
        assert found["scores"].equal(found["scores"].sort(descending=True).values)


def test_a_few_images_are_overfit():
    torch.manual_seed(0)
    spec = InputSpec(1, (32, 32), 3)
    model = build(spec, num_queries=4)
    boxes = [[[2, 2, 14, 14]], [[16, 4, 30, 20], [4, 18, 12, 30]], [[8, 8, 24, 24]], []]
    labels = [[0], [1, 2], [2], []]
    targets = [target(b, c) for b, c in zip(boxes, labels, strict=True)]
    images = torch.zeros(4, 1, 32, 32)
    for image, t in zip(images, targets, strict=True):
        for (x1, y1, x2, y2), c in zip(
            t["boxes"].long().tolist(), t["labels"].tolist(), strict=True
        ):
            image[0, y1:y2, x1:x2] = c + 1.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    # One thread: ops this small gain nothing from two, and on a busy 2-core machine torch's
    # second thread waiting for a core made these 60 steps take a minute instead of 2 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(60):
            loss = sum(model(images, targets).losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert history[-1] < 0.25 * history[0], (history[0], history[-1])
