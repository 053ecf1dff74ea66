"""Segmentation data: canvases (exact, deterministic masks), masks that follow their images
through augmentation, the classification path left as it was, and a user's mask folder with
every problem reported by file. ``write_mask_folder`` and ``write_fashion_idx`` are the sample
writers the dataset contract tests (test_datasets.py) can use."""

import gzip
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paralab.errors import ConfigError, DatasetNotFoundError, ParalabError
from paralab.platform.config import validate_section
from paralab.platform.data import DATASETS
from paralab.platform.data.base import (
    IGNORE_INDEX,
    DataConfig,
    ImageData,
    InMemoryImages,
    augment_batch,
    build_segmentation_data,
)
from paralab.platform.data.canvas import CanvasConfig, build_canvas_data, make_canvases

SEGMENTATION = ["canvas_digits", "canvas_fashion", "mask_folder"]


def write_fashion_idx(root, n_train=60, n_test=20):
    """Tiny Fashion-MNIST idx files under root/FashionMNIST/raw; returns the data options."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
        for kind, array in (("images", images), ("labels", labels)):
            header = struct.pack(">HBB", 0, 8, array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            with gzip.open(raw / f"{split}-{kind}-idx{array.ndim}-ubyte.gz", "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())
    return {"root": str(root), "train_images": 40, "test_images": 20}


def write_mask_folder(root, n=10, test=False, classes=3):
    """PNG images (12 wide, 10 high) whose grey level is 60 * their mask; returns the options."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in [root, root / "test"] if test else [root]:
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        for i in range(n):
            mask = rng.integers(0, classes, (10, 12), dtype=np.uint8)
            Image.fromarray(np.repeat(mask[..., None] * 60, 3, 2)).save(folder / f"images/{i}.png")
            Image.fromarray(mask).save(folder / f"masks/{i}.png")
    return {"path": str(root), "classes": ["background", *[f"c{i}" for i in range(1, classes)]]}


def load(name, **options):
    entry = DATASETS.get(name)
    return entry.obj(validate_section("data", {"name": name, **options}, entry.config))


def digits_source():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    return images, torch.from_numpy(bunch.target)


def small(**options):
    values = {"name": "canvas_digits", "item_size": 16, "train_images": 30, "test_images": 10}
    return validate_section("data", {**values, **options}, CanvasConfig)


# --- canvases ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_datasets_are_registered_as_such(name):
    assert DATASETS.get(name).meta["task"] == "segmentation"


def test_canvases_are_deterministic_for_a_seed():
    sizes, threads = {"train_images": 40, "test_images": 10}, torch.get_num_threads()
    a, b = load("canvas_digits", **sizes), load("canvas_digits", **sizes)
    assert torch.get_num_threads() == threads  # painting ran on one thread, then gave them back
    c = load("canvas_digits", **sizes, seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).targets, getattr(b, split).targets)
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.test.targets, c.test.targets)


def test_canvas_data_shapes_classes_and_mask_values(tmp_path):
    data = load("canvas_fashion", **write_fashion_idx(tmp_path), val_fraction=0.25)
    assert isinstance(data, ImageData) and data.task == "segmentation"
    assert data.classes[0] == "background" and data.classes[1] == "t-shirt/top"
    assert data.num_classes == 11 and data.ignore_index is None
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    assert data.image_size == (64, 64) and data.in_channels == 1
    assert data.train.targets.dtype == torch.uint8 and data.train.targets.shape == (30, 64, 64)
    x, y = data.train.__getitems__([0, 1])
    assert x.shape == (2, 1, 64, 64) and y.shape == (2, 64, 64) and y.dtype == torch.long
    assert torch.equal(data.test[3][1], data.test.targets[3].long())
    for split in (data.train, data.val, data.test):
        assert int(split.targets.max()) < data.num_classes
        assert (split.targets > 0).float().mean() > 0.05  # items were pasted


def test_masks_count_exactly_the_visible_foreground_of_each_item():
    items, labels = digits_source()
    cfg = small(items_min=2, items_max=5, scale_min=1.0, scale_max=3.0)
    images, masks, p = make_canvases(items, labels, 25, cfg, seed=7)
    expected, occluded = torch.zeros(25, 11, dtype=torch.long), 0
    for c in range(25):
        owner = torch.full((64, 64), -1)  # which item (by row of p) owns each pixel
        for i in (p.canvas == c).nonzero().flatten().tolist():
            s, t, left = int(p.size[i]), int(p.top[i]), int(p.left[i])
            item = items[p.source[i]][None].float()
            patch = F.interpolate(item, size=(s, s), mode="bilinear", align_corners=False)
            fg = patch[0, 0].round().clamp(0, 255) > cfg.threshold * 255
            assert t >= 0 and t + s <= 64 and left >= 0 and left + s <= 64  # inside the canvas
            occluded += int((owner[t : t + s, left : left + s][fg] >= 0).sum())
            owner[t : t + s, left : left + s][fg] = i
        for i in owner[owner >= 0].tolist():
            expected[c, int(p.label[i]) + 1] += 1
        assert torch.equal(masks[c] > 0, owner >= 0)
        assert torch.equal(masks[c] > 0, images[c, 0] > 0)  # black background, painted items
    counts = torch.stack([torch.bincount(m.flatten().long(), minlength=11) for m in masks])
    assert torch.equal(counts[:, 1:], expected[:, 1:])
    assert occluded > 0  # the check covered overwritten pixels


def test_items_of_any_drawn_size_stay_inside_the_canvas():
    items, labels = digits_source()
    cfg = small(canvas_size=32, item_size=16, scale_min=0.1, scale_max=2.0, items_max=8)
    _, _, p = make_canvases(items, labels, 200, cfg, seed=0)
    assert int(p.size.max()) == 32 and int(p.size.min()) >= 1
    assert bool((p.top >= 0).all() and (p.top + p.size <= 32).all())
    assert bool((p.left >= 0).all() and (p.left + p.size <= 32).all())
    assert set(torch.bincount(torch.bincount(p.canvas)).nonzero().flatten().tolist()) <= set(
        range(1, 9)
    )


def test_train_canvases_use_only_train_items_and_test_only_test_items():
    train = (torch.full((5, 1, 8, 8), 100, dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 0]))
    test = (torch.full((3, 1, 8, 8), 200, dtype=torch.uint8), torch.tensor([1, 1, 1]))
    data = build_canvas_data("t", ["a", "b"], train, test, small(val_fraction=0))
    assert data.classes == ["background", "a", "b"]
    assert set(data.train.images.unique().tolist()) == {0, 100}
    assert set(data.test.images.unique().tolist()) == {0, 200}
    assert set(data.test.targets.unique().tolist()) == {0, 2}


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"items_min": 4, "items_max": 3}, r"data\.items_min=4 is above data\.items_max=3"),
        ({"scale_min": 2.0, "scale_max": 1.0}, r"data\.scale_min=2\.0 is above"),
        ({"item_size": 48, "scale_max": 1.5}, r"data\.scale_max=1\.5 .*72 px.*canvas_size=72"),
        ({"threshold": 1.0}, r"data\.threshold=1\.0: must be"),
        ({"train_images": 0}, r"data\.train_images=0: must be"),
    ],
)
def test_canvas_options_that_cannot_work_name_the_key_and_the_fix(options, key):
    with pytest.raises(ConfigError, match=key):
        load("canvas_digits", **options)


# --- masks through InMemoryImages and augmentation ----------------------------------------------


def threshold_pair(n=16):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 12, 12), dtype=torch.uint8)
    return images, (images[:, 0] > 100).to(torch.uint8)


@pytest.mark.parametrize("ops", [["hflip"], ["crop"], ["hflip", "crop"]])
def test_masks_get_the_same_flip_and_crop_as_their_images(ops):
    images, masks = threshold_pair()
    data = InMemoryImages(images, masks, torch.zeros(1), torch.ones(1), ops)
    torch.manual_seed(1)
    x, y = data.__getitems__(range(16))
    assert y.dtype == torch.long and y.shape == (16, 12, 12)
    labelled = y != IGNORE_INDEX
    assert torch.equal(y[labelled], (x[:, 0] * 255 > 100).long()[labelled])
    assert torch.equal(x[:, 0][~labelled], torch.zeros(int((~labelled).sum())))
    if "crop" in ops:  # some pixels were padded in: void in the masks, 0 in the images
        assert int((~labelled).sum()) > 0
    torch.manual_seed(1)
    assert torch.equal(x, augment_batch(images.float() / 255, ops))  # images: same draws as ever
    torch.manual_seed(2)
    x1, y1 = data[5]
    assert x1.shape == (1, 12, 12) and y1.shape == (12, 12)
    assert torch.equal(y1[y1 != 255], (x1[0] * 255 > 100).long()[y1 != 255])


def test_masks_stay_uint8_and_subsets_keep_them():
    images, masks = threshold_pair()
    data = InMemoryImages(images, masks, torch.zeros(1), torch.ones(1), ["hflip"])
    part = data.subset([3, 1])
    assert data.targets.dtype == torch.uint8 and part.targets.dtype == torch.uint8
    assert torch.equal(part.targets, masks[[3, 1]]) and part.augment == ("hflip",)
    assert data.subset([0], augment=False).augment == ()
    with pytest.raises(ValueError, match="do not match"):
        InMemoryImages(images, masks[:, :5], torch.zeros(1), torch.ones(1))


def test_class_labels_take_the_path_they_always_took():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    data = InMemoryImages(images, torch.arange(6, dtype=torch.int32), torch.zeros(3), torch.ones(3))
    assert data.targets.dtype == torch.long and data.targets.shape == (6,) and not data.has_masks
    x, y = data.__getitems__([4, 2])
    assert torch.equal(y, torch.tensor([4, 2])) and y.dtype == torch.long
    assert torch.equal(x, images[[4, 2]].float() / 255)
    assert data[1][1].ndim == 0 and data.subset([5, 0]).targets.tolist() == [5, 0]


def test_segmentation_splits_like_classification_and_crop_means_void_pixels():
    images, masks = threshold_pair(20)
    cfg = DataConfig(val_fraction=0.25, train_limit=10, augment=["crop"])
    data = build_segmentation_data("t", ["background", "fg"], (images, masks), (images, masks), cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 5, 20)
    assert data.task == "segmentation" and data.ignore_index == IGNORE_INDEX
    with pytest.raises(ConfigError, match="training split of t is empty"):
        build_segmentation_data("t", ["background", "fg"], (images[:0], masks[:0]),
                                (images, masks), DataConfig())  # fmt: skip
    with pytest.raises(ValueError, match=r"mask values \[1\]"):
        build_segmentation_data("t", ["background"], (images, masks), (images, masks), cfg)


# --- mask_folder ----------------------------------------------------------------------------------


def test_mask_folder_reads_images_with_their_masks(tmp_path):
    data = load("mask_folder", **write_mask_folder(tmp_path), val_fraction=0.25)
    assert data.task == "segmentation" and data.ignore_index == IGNORE_INDEX
    assert data.classes == ["background", "c1", "c2"]
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    assert data.image_size == (10, 12) and data.in_channels == 3
    for split in (data.train, data.val, data.test):  # each image is still paired with its mask
        assert torch.equal(split.images[:, 1], split.targets * 60)


def test_mask_folder_test_folder_classes_txt_and_resizing(tmp_path):
    options = write_mask_folder(tmp_path, n=4, test=True)
    (tmp_path / "classes.txt").write_text("background\nc1\nc2\n")
    data = load("mask_folder", path=options["path"], image_size=6, grayscale=True, val_fraction=0)
    assert data.classes == ["background", "c1", "c2"]
    assert (len(data.train), len(data.test)) == (4, 4) and data.image_size == (6, 6)
    assert data.in_channels == 1 and set(data.test.targets.unique().tolist()) <= {0, 1, 2}


def _break(root, how):
    from PIL import Image

    if how == "no mask":
        for i in (3, 4):
            (root / f"masks/{i}.png").unlink()
    elif how == "no image":
        (root / "images/2.png").unlink()
    elif how == "size":
        Image.fromarray(np.zeros((7, 12), np.uint8)).save(root / "masks/5.png")
    elif how == "values":
        Image.fromarray(np.full((10, 12), 9, np.uint8)).save(root / "masks/6.png")
    elif how == "rgb":
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "masks/1.png")
    elif how == "sizes differ":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images/7.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks/7.png")
    elif how == "empty":
        for file in [*(root / "images").iterdir(), *(root / "masks").iterdir()]:
            file.unlink()


@pytest.mark.parametrize(
    ("how", "error", "message"),
    [
        ("no mask", ParalabError, r"2 image\(s\) without a mask .*\(3\.png, 4\.png\)"),
        ("no image", ParalabError, r"1 mask\(s\) without an image .*masks \(2\.png\)"),
        ("size", ParalabError, r"mask .*masks/5\.png is 12x7 .*images/5\.png is 12x10"),
        ("values", ParalabError, r"masks/6\.png holds value\(s\) 9 outside the 3 classes"),
        ("rgb", ParalabError, r"masks/1\.png has mode RGB .*single-channel"),
        ("sizes differ", ParalabError, r"images/7\.png is 8x8 .*data\.image_size"),
        ("empty", DatasetNotFoundError, r"no images .* in .*images"),
    ],
)
def test_mask_folder_problems_name_the_file_and_the_fix(tmp_path, how, error, message):
    options = write_mask_folder(tmp_path)
    _break(tmp_path, how)
    with pytest.raises(error, match=message):
        load("mask_folder", **options)


def test_mask_folder_needs_a_folder_and_classes(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"data\.path: .*nowhere is not a folder"):
        load("mask_folder", path=str(tmp_path / "nowhere"), classes=["background", "a"])
    write_mask_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.classes is required .*classes\.txt"):
        load("mask_folder", path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"'background' \(mask value 0\) first"):
        load("mask_folder", path=str(tmp_path), classes=["cat", "dog", "fox"])
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        load("mask_folder")
