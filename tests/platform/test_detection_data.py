"""Detection data: canvas boxes are exact and seeded, boxes are checked, flips move boxes."""

from __future__ import annotations

import pytest
import torch

from paralab.errors import ConfigError
from paralab.platform.config import validate_section
from paralab.platform.data import DATASETS
from paralab.platform.data.base import DataConfig
from paralab.platform.data.boxes import (
    BoxImages,
    box_dicts,
    build_detection_data,
    keep_classes,
    pad_boxes,
    showing,
)


def canvases(name: str = "canvas_digits_boxes", **options):
    entry = DATASETS.get(name)
    values = {"name": name, "train_images": 60, "test_images": 20, **options}
    return entry.obj(validate_section("data", values, entry.config))


def test_canvas_boxes_are_the_tight_boxes_of_visible_pixels():
    data = canvases(items_min=2, items_max=4)
    assert data.task == "detection" and isinstance(data.train, BoxImages)
    assert len(data.classes) == 10
    for split in (data.train, data.test):
        for image, rows in zip(split.images[:, 0], split.targets, strict=True):
            lit = image > 0.2 * 255
            covered = torch.zeros_like(lit)
            for label, x1, y1, x2, y2 in rows[rows[:, 0] >= 0].long().tolist():
                assert 0 <= label < 10
                inside = lit[y1:y2, x1:x2]
                # tight: every edge row and column of the box has a visible pixel
                assert inside[0].any() and inside[-1].any()
                assert inside[:, 0].any() and inside[:, -1].any()
                covered[y1:y2, x1:x2] = True
            assert not (lit & ~covered).any(), "a visible pixel lies outside every box"


def test_canvas_boxes_are_seeded_and_share_images_with_segmentation_canvases():
    a, b = canvases(seed=3), canvases(seed=3)
    assert torch.equal(a.test.targets, b.test.targets)
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.test.images, canvases(seed=4).test.images)
    masks = canvases("canvas_digits", seed=3, items_max=4)
    assert torch.equal(masks.test.images, a.test.images)
    # every masked pixel's class is the label of a box around it
    for mask, rows in zip(masks.test.targets[:10], a.test.targets[:10], strict=True):
        for label, x1, y1, x2, y2 in rows[rows[:, 0] >= 0].long().tolist():
            assert (mask[y1:y2, x1:x2] == label + 1).any()


def test_a_fully_covered_item_has_no_box():
    from paralab.platform.data.canvas_boxes import visible_boxes

    instances = torch.zeros(1, 8, 8, dtype=torch.uint8)
    instances[0, 2:5, 1:4] = 2  # order 1 visible; order 0 covered everywhere
    boxes, seen = visible_boxes(instances, 2)
    assert seen.tolist() == [[False, True]]
    assert boxes[0, 1].tolist() == [1, 2, 4, 5]


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ([0, 5, 5, 5, 9], "zero or negative size"),
        ([0, 5, 5, 2, 9], "zero or negative size"),
        ([0, float("nan"), 5, 8, 9], "NaN"),
        ([0, 5, 5, 40, 9], "outside the 32x32 image"),
        ([7, 5, 5, 8, 9], "not a class id"),
    ],
)
def test_bad_boxes_are_refused_with_the_image_and_the_fix(row, words):
    images = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    good = pad_boxes([torch.tensor([[1.0, 2, 2, 10, 10]])] * 4)
    bad = good.clone()
    bad[2, 0] = torch.tensor(row)
    cfg = DataConfig(name="mine", val_fraction=0)
    with pytest.raises(ConfigError, match=words) as error:
        build_detection_data("mine", ["a", "b", "c"], (images, good), (images, bad), cfg)
    assert "image at index 2" in str(error.value) and "test" in str(error.value)


def test_images_without_objects_are_kept():
    images = torch.zeros(3, 1, 16, 16, dtype=torch.uint8)
    targets = pad_boxes([torch.zeros(0, 5), torch.tensor([[0.0, 1, 1, 5, 5]]), torch.zeros(0, 5)])
    cfg = DataConfig(name="mine", val_fraction=0)
    data = build_detection_data("mine", ["a"], (images, targets), (images, targets), cfg)
    dicts = box_dicts(data.test.targets)
    assert [len(d["labels"]) for d in dicts] == [0, 1, 0]


def test_crop_and_label_fraction_are_refused():
    images, targets = torch.zeros(2, 1, 8, 8, dtype=torch.uint8), pad_boxes([torch.zeros(0, 5)] * 2)
    with pytest.raises(ConfigError, match=r"data.augment=\[hflip\]"):
        build_detection_data("m", ["a"], (images, targets), (images, targets),
                             DataConfig(augment=["crop"]))  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.label_fraction=null"):
        build_detection_data("m", ["a"], (images, targets), (images, targets),
                             DataConfig(label_fraction=0.5))  # fmt: skip


def test_hflip_moves_boxes_with_their_pixels():
    images = torch.zeros(1, 1, 10, 20, dtype=torch.uint8)
    images[0, 0, 2:5, 1:4] = 255
    targets = pad_boxes([torch.tensor([[0.0, 1, 2, 4, 5]])])
    split = BoxImages(images, targets, torch.zeros(1), torch.ones(1), augment=["hflip"])
    seen = set()
    for _ in range(40):
        x, y = split.__getitems__([0])
        x1, y1, x2, y2 = y[0, 0, 1:].long().tolist()
        lit = (x[0, 0] > 0.5).nonzero()
        assert (lit[:, 1].min(), lit[:, 1].max() + 1) == (x1, x2)
        assert (y1, y2) == (2, 5)
        seen.add(x1)
    assert seen == {1, 16}


def test_class_selection_drops_other_boxes_but_keeps_images():
    targets = pad_boxes(
        [torch.tensor([[0.0, 1, 1, 5, 5], [2, 6, 6, 9, 9]]), torch.tensor([[1.0, 1, 1, 3, 3]])]
    )
    assert showing(targets, [2]).tolist() == [True, False]
    kept = keep_classes(targets, [2])
    assert kept[..., 0].tolist() == [[-1, 2], [-1, -1]]
