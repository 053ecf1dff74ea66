"""The tasks' own arithmetic: losses, metrics, partition labels, attacks, batching."""

from __future__ import annotations

import math

import pytest
import torch

from paralab.platform.data.base import make_loader
from paralab.platform.tasks import TASKS
from paralab.platform.tasks.evaluate import evaluate
from paralab.platform.tasks.segmentation import dominant_class, scores_from_confusion

CLASSES = ["background", "a", "b", "c"]


def task(name: str, classes=CLASSES):
    entry = TASKS.get(name)
    return entry.obj(entry.config(), classes)


def test_every_task_declares_what_paradigms_read():
    for entry in TASKS.entries():
        cls = entry.obj
        assert cls.headline and cls.data_kind and cls.scenarios and cls.attacks, entry.name
        assert entry.config is not None and entry.config().name == entry.name


def test_miou_counts_only_classes_that_occur_and_the_all_background_floor():
    # rows: true class, columns: predicted; class 3 never occurs in targets or predictions
    confusion = torch.tensor([[90, 0, 0, 0], [5, 5, 0, 0], [0, 2, 8, 0], [0, 0, 0, 0]])
    scores = scores_from_confusion(confusion)
    iou = scores["iou"].tolist()
    assert iou[0] == pytest.approx(90 / 95) and iou[1] == pytest.approx(5 / 12)
    assert iou[2] == pytest.approx(8 / 10) and math.isnan(iou[3])
    assert float(scores["miou"]) == pytest.approx((90 / 95 + 5 / 12 + 8 / 10) / 3)
    assert float(scores["pixel_acc"]) == pytest.approx(103 / 110)
    # predicting background everywhere: IoU 90/110 for background, 0 for the 2 others present
    assert float(scores["miou_all_background"]) == pytest.approx(90 / 110 / 3)


def test_segmentation_metrics_ignore_void_pixels_and_score_a_perfect_model_one():
    seg = task("segmentation")
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.nn.functional.one_hot(target.clamp(max=3), 4).movedim(-1, 1).float() * 10
    metrics = seg.metrics()
    metrics.update(logits, target)
    values = seg.summarize(metrics.compute())
    assert values["miou"] == 1.0 and values["pixel_acc"] == 1.0
    assert math.isnan(values["iou/c"])
    assert seg.score(values, [1, 2]) == 1.0 and math.isnan(seg.score(values, [3]))
    assert float(seg.loss(logits, target)) < 1e-3  # the void pixel adds nothing


def test_soft_dice_adds_to_the_loss_when_asked():
    entry = TASKS.get("segmentation")
    plain = entry.obj(entry.config(), CLASSES)
    dice = entry.obj(entry.config(dice_weight=1.0), CLASSES)
    logits, target = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    assert float(dice.loss(logits, target)) > float(plain.loss(logits, target))


def test_dominant_class_and_label_flip_of_masks():
    masks = torch.tensor([[[0, 1, 1], [2, 0, 255]], [[0, 0, 0], [0, 255, 255]]], dtype=torch.uint8)
    assert dominant_class(masks, 4).tolist() == [1, 0]
    flipped = task("segmentation").flip_labels(masks.long())
    assert flipped[0].tolist() == [[0, 3, 3], [2, 0, 255]]  # c -> 4 - c; 0 and void stay
    labels = torch.tensor([0, 1, 3])
    assert task("classification").flip_labels(labels).tolist() == [3, 2, 0]


def test_evaluate_reports_the_mean_loss_and_the_headline():
    cls = task("classification")
    model = torch.nn.Linear(2, 4)
    x, y = torch.randn(10, 2), torch.randint(0, 4, (10,))
    values = evaluate(cls, model, [(x[:6], y[:6]), (x[6:], y[6:])])
    with torch.no_grad():
        logits = model(x)
    assert values["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    assert values["acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))


def test_items_without_a_batched_getitems_are_joined_by_the_tasks_collate():
    items = [(torch.full((1, 2, 2), float(i)), torch.tensor(i % 4)) for i in range(5)]
    cls = task("classification")
    x, y = cls.fetch(items, [1, 3])
    assert x.shape == (2, 1, 2, 2) and y.tolist() == [1, 3]
    batches = list(make_loader(items, 2, shuffle=False, collate=cls.collate))
    assert [len(b[1]) for b in batches] == [2, 2, 1]
