"""The COCO-json loader: a tiny instances json with PNGs round-trips (xyxy boxes scaled with
their images, class names from categories sorted by id, crowd skipped, negatives kept), and
every broken file or box is refused naming the file, the id, the problem and the fix.
``write_coco`` is the sample writer the dataset contract tests (test_datasets.py) can use."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import paralab
from paralab.errors import ConfigError
from paralab.platform.config import validate_section
from paralab.platform.data import DATASETS
from paralab.platform.data.coco import COCOConfig

W, H = 40, 30  # every sample image, pixels


def write_coco(root: Path, n: int = 10) -> dict:
    """n grey PNGs (W x H, image i all 20 * i) in root/images, their json at root/train.json:
    cat (id 7) and dog (id 3) boxes, a crowd box on image 1, none on the last image."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i in range(n):
        pixels = np.full((H, W, 3), 20 * i, np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
    boxes = [  # image_id, category_id, bbox [x, y, width, height], iscrowd
        (0, 7, [4, 3, 10, 6], 0),
        (0, 3, [20, 10, 20, 20], 0),  # reaches the right and bottom edges exactly
        (1, 3, [0, 0, 40, 30], 1),  # crowd: skipped
        (1, 3, [8, 6, 4, 4], 0),
        (2, 7, [-0.5, 0, 10.7, 30.5], 0),  # sticks out by < 1 pixel: clipped
        *[(i, 3 + 4 * (i % 2), [i, i, 5, 5], 0) for i in range(3, n - 1)],
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in range(n)],
        "annotations": [
            {"id": a, "image_id": i, "category_id": c, "bbox": b, "iscrowd": crowd, "area": 1}
            for a, (i, c, b, crowd) in enumerate(boxes)
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    (root / "train.json").write_text(json.dumps(data))
    return {"train_annotations": str(root / "train.json"), "train_images": str(root / "images")}


def load(**options):
    entry = DATASETS.get("coco")
    return entry.obj(validate_section("data", {"name": "coco", **options}, entry.config))


def edit(file: Path, change) -> None:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


def test_coco_is_registered_for_detection_and_its_yaml_matches_the_schema(tmp_path):
    assert DATASETS.get("coco").meta["task"] == "detection"
    yaml = Path(paralab.__file__).parent / "configs" / "data" / "coco.yaml"
    values = {**OmegaConf.to_container(OmegaConf.load(yaml)), **write_coco(tmp_path)}
    assert validate_section("data", values, COCOConfig) == COCOConfig(**values)


def test_coco_round_trips_boxes_scaled_with_their_images(tmp_path):
    options = write_coco(tmp_path)
    both = {**options, "test_annotations": options["train_annotations"],
            "test_images": options["train_images"]}  # fmt: skip
    data = load(**both, image_size=[15, 20], val_fraction=0)  # half of 30 x 40
    assert data.task == "detection" and data.classes == ["dog", "cat"]  # sorted by id: 3, 7
    assert data.image_size == (15, 20) and data.in_channels == 3
    assert (len(data.train), len(data.test)) == (10, 10)
    test = data.test
    assert test.images[:, 0, 0, 0].tolist() == [20 * i for i in range(10)]  # json order
    assert test.targets.shape == (10, 2, 5)
    expected = {
        0: [[1, 2, 1.5, 7, 4.5], [0, 10, 5, 20, 15]],  # cat, dog, both halved
        1: [[0, 4, 3, 6, 5], [-1, 0, 0, 0, 0]],  # the crowd box is gone
        2: [[1, 0, 0, 5.1, 15], [-1, 0, 0, 0, 0]],  # clipped to the image, then halved
        9: [[-1, 0, 0, 0, 0]] * 2,  # no annotations: kept, all padding
    }
    for i, rows in expected.items():
        assert torch.allclose(test.targets[i], torch.tensor(rows, dtype=torch.float32)), i
    x, y = test.__getitems__([0, 9])
    assert x.shape == (2, 3, 15, 20) and y.shape == (2, 2, 5)


def test_coco_grey_and_a_seeded_test_fraction(tmp_path):
    data = load(**write_coco(tmp_path), channels=1, test_fraction=0.3, val_fraction=0.25)
    assert data.in_channels == 1 and data.image_size == (64, 64)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 2, 3)
    seen = torch.cat([s.images[:, 0, 0, 0] for s in (data.train, data.val, data.test)])
    assert sorted(seen.tolist()) == [20 * i for i in range(10)]  # each image in one split
    again = load(**write_coco(tmp_path / "b"), channels=1, test_fraction=0.3, val_fraction=0.25)
    assert torch.equal(again.test.targets, data.test.targets)


def _break(root: Path, how: str) -> dict:
    """Damage the sample written by write_coco; returns overrides for the load."""
    file = root / "train.json"
    first = lambda key, value: lambda d: d["annotations"][0].update({key: value})  # noqa: E731
    changes = {
        "no key": lambda d: d.pop("categories"),
        "ghost image": lambda d: d["annotations"].append(
            {"id": 99, "image_id": 1234, "category_id": 3, "bbox": [0, 0, 2, 2]}
        ),
        "category": first("category_id", 5),
        "width": first("bbox", [4, 3, 0, 6]),
        "height": first("bbox", [4, 3, 5, -2]),
        "nan": first("bbox", [4, float("nan"), 5, 5]),
        "outside": first("bbox", [35, 0, 10, 5]),
        "empty": lambda d: d.update(annotations=[]),
        "only crowd": lambda d: [a.update(iscrowd=1) for a in d["annotations"]],
        "json size": lambda d: d["images"][4].update(width=50),
    }
    if how in changes:
        edit(file, changes[how])
    elif how == "invalid json":
        file.write_text('{"images": [')
    elif how == "missing image":
        (root / "images" / "3.png").unlink()
    elif how == "no file":
        return {"train_annotations": str(root / "nope.json")}
    elif how == "categories differ":
        test = root / "test.json"
        test.write_text(file.read_text())
        edit(test, lambda d: d["categories"][0].update(name="kitten"))
        return {"test_annotations": str(test), "test_images": str(root / "images")}
    elif how == "half a test split":
        return {"test_annotations": str(file)}
    return {}


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no file", r"data\.train_annotations: .*nope\.json is not a file"),
        ("invalid json", r"train\.json: is not valid JSON .*Fix or re-export"),
        ("no key", r"train\.json: has no 'categories' list"),
        ("missing image", r"image 3 is '3\.png', which is not in .*images\. Copy it there"),
        ("ghost image", r"annotation 99 names image 1234, which is not in 'images'"),
        ("category", r"annotation 0 \(image 0\) has category_id 5, not one of .*\[3, 7\]"),
        ("width", r"annotation 0 \(image 0\) .*\[4, 3, 0, 6\]: its width and height must be > 0"),
        ("height", r"annotation 0 .*width and height must be > 0\. Fix or drop"),
        ("nan", r"annotation 0 \(image 0\) .*NaN"),
        ("outside", r"annotation 0 .*outside its 40x30 image by more than 1 pixel"),
        ("empty", r"train\.json: empty annotations: it holds no annotations"),
        ("only crowd", r"empty annotations: it holds only crowd annotations \(\d+, iscrowd=1"),
        ("json size", r"image 4 \(4\.png\) is 40x30 \(WxH\) but 'images' says 50x30"),
        ("categories differ", r"test\.json has the categories .*'kitten'.* same categories"),
        ("half a test split", r"data\.test_annotations is set but data\.test_images is not"),
    ],
)
def test_coco_problems_name_the_file_the_id_and_the_fix(tmp_path, how, message):
    options = {**write_coco(tmp_path), **_break(tmp_path, how)}
    with pytest.raises(ConfigError, match=message):
        load(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": [64]}, r"data\.image_size=\[64\]: must be \[height, width\]"),
        ({"image_size": [0, 8]}, r"data\.image_size=\[0,8\]: each entry must be"),
        ({"channels": 2}, r"data\.channels=2: choose one of 1, 3"),
        ({"augment": ["crop"]}, r"data\.augment=\[crop\]: coco holds boxes"),
        ({"label_fraction": 0.5}, r"data\.label_fraction=0\.5: coco is a detection set"),
    ],
)
def test_coco_options_that_cannot_work_are_refused(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        load(**write_coco(tmp_path), **options)
