"""The detection task: COCO mAP on known cases, the centre-box baseline, what paradigms split by."""

from __future__ import annotations

import math

import pytest
import torch

from paralab.platform.data.boxes import BoxImages, box_dicts, pad_boxes
from paralab.platform.models.detection.base import DetectionOutput
from paralab.platform.tasks.detection import Detection, DetectionConfig, centre_baseline
from paralab.strategies.continual.scenarios import build_stream

CLASSES = ["a", "b", "c"]
TARGETS = pad_boxes(
    [
        torch.tensor([[0.0, 10, 10, 30, 30], [1, 30, 30, 60, 60]]),
        torch.tensor([[2.0, 5, 5, 20, 25]]),
        torch.zeros(0, 5),
    ]
)


def task() -> Detection:
    detection = Detection(DetectionConfig(), CLASSES)

    class Data:
        image_size = (64, 64)

    detection.bind(Data())
    return detection


def scored(detections) -> dict[str, float]:
    t = task()
    metric = t.metrics()
    metric.update(DetectionOutput({}, detections), TARGETS)
    return t.summarize(metric.compute())


def test_perfect_predictions_score_one_and_empty_ones_zero():
    perfect = [dict(d, scores=torch.ones(len(d["labels"]))) for d in box_dicts(TARGETS)]
    values = scored(perfect)
    assert values["map"] == values["map_50"] == values["mar_100"] == 1.0
    assert [values[f"ap/{c}"] for c in CLASSES] == [1.0, 1.0, 1.0]
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0).long()}
    values = scored([empty] * 3)
    assert values["map"] == values["map_50"] == 0.0


def test_a_wrong_class_or_a_loose_box_costs_what_coco_says():
    dicts = box_dicts(TARGETS)
    shifted = [dict(d, scores=torch.ones(len(d["labels"]))) for d in dicts]
    shifted[1] = dict(shifted[1], labels=torch.tensor([0]))  # class c predicted as a
    values = scored(shifted)
    assert values["ap/c"] == 0.0 and values["ap/b"] == 1.0
    assert values["map"] < 1.0
    # a box of IoU 0.6 counts at 0.5, not at 0.75
    loose = [dict(d, scores=torch.ones(len(d["labels"]))) for d in dicts]
    loose[1] = dict(loose[1], boxes=torch.tensor([[5.0, 5, 20, 25 + 20 * 0.66]]))
    values = scored(loose)
    assert values["ap/c"] < 1.0
    assert values["map_50"] == 1.0 and values["map_75"] < 1.0


def test_the_baseline_is_one_mean_sized_centre_box_of_the_most_frequent_class():
    truths = [
        {"boxes": torch.tensor([[22.0, 22, 42, 42]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[0.0, 0, 20, 20], [22, 22, 42, 42]]),
            "labels": torch.tensor([0, 1]),
        },
    ]
    floor = centre_baseline(truths, (64, 64))
    assert floor[0]["boxes"].tolist() == [[22.0, 22.0, 42.0, 42.0]]
    assert floor[0]["labels"].tolist() == [1]
    values = scored(centre_baseline(box_dicts(TARGETS), (64, 64)))
    assert 0 <= values["baseline_map"] <= values["baseline_map_50"] < 1


def test_non_finite_detections_fail_loudly():
    bad = {"boxes": torch.tensor([[0.0, 0, math.nan, 4]]), "scores": torch.ones(1),
           "labels": torch.zeros(1).long()}  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"optim\.lr"):
        scored([bad] * 3)


def test_training_passes_score_nothing():
    metric = task().metrics()
    metric.update(DetectionOutput({"x": torch.tensor(1.0)}, None), TARGETS)
    assert metric.compute() == {}


def test_score_averages_the_ap_of_the_classes_asked_for():
    values = {"map": 0.5, "ap/a": 0.2, "ap/b": 0.6, "ap/c": float("nan")}
    assert task().score(values, [0, 1]) == pytest.approx(0.4)
    assert task().score(values, [2]) != task().score(values, [2])  # NaN: no objects
    assert task().score(values) == 0.5


def test_partition_labels_and_flipped_labels():
    t = task()
    assert t.partition_labels(TARGETS).tolist() == [0, 2, 0]
    assert t.flip_labels(TARGETS)[..., 0].tolist() == [[2, 1], [0, -1], [-1, -1]]


def test_class_incremental_boxes_leave_old_objects_unlabelled():
    images = torch.zeros(3, 1, 64, 64, dtype=torch.uint8)
    split = BoxImages(images, TARGETS, torch.zeros(1), torch.ones(1))
    stream = build_stream(split, split, [0, 1, 2], "class", 3, None)
    first = stream[0]  # class a: image 0 only, its b box unlabelled in training
    assert first.score_classes == [0]
    assert first.train.targets[..., 0].tolist() == [[0, -1]]
    assert first.test.targets[..., 0].tolist() == [[0, 1]]
    joint = build_stream(split, split, [0, 1, 2], "class", 3, None, background_shift=False)
    assert joint[0].train.targets[..., 0].tolist() == [[0, 1]]
