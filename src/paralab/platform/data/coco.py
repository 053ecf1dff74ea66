"""A user's own detection data as COCO "instances" json: ``data.train_annotations`` (the json)
with ``data.train_images`` (the folder its ``file_name`` entries are relative to), the same for
the test split, or a seeded ``data.test_fraction`` of the training images without one.

Why: COCO json is what annotation tools (CVAT, Label Studio, Roboflow) export, and the first
things that go wrong with it are the file (a path, a key, an image not copied along) and boxes
drawn past the image edge. So every such problem is found where the dataset is built, before
any run folder exists, and reported once, naming the file, the image or annotation id, the
problem and the fix.

Categories sorted by id become class ids 0..C-1 (class names = category names); a test json
must list the same categories. A COCO ``bbox`` is ``[x, y, width, height]`` in pixels; it
becomes ``x1, y1, x2, y2``. Boxes may stick out of their image by up to 1 pixel (rounding in
annotation tools) and are clipped to it; further out they are refused. ``iscrowd: 1``
annotations are skipped: the COCO evaluator treats them as regions to ignore, which is not
modelled here. Images without annotations are kept (negatives, as in COCO). Every image is
resized to ``data.image_size`` ([height, width], bilinear) with its boxes scaled alike: the
in-memory sets hold one size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData
from paralab.platform.data.boxes import build_detection_data, pad_boxes
from paralab.platform.data.image_files import (
    ImageFilesConfig,
    UnreadableImage,
    image_tensor,
    open_image,
)
from paralab.platform.data.registry import register_dataset

TOLERANCE = 1.0  # pixels a box may stick out of its image before it is refused (else clipped)


@dataclass
class COCOConfig(ImageFilesConfig):
    name: str = "coco"
    train_annotations: str = "???"  # a COCO instances json
    train_images: str = "???"  # the folder its images' file_name entries are relative to
    test_annotations: str | None = None  # null: a seeded test_fraction of the training images
    test_images: str | None = None
    batch_size: int = bounded(32, ge=1)
    eval_batch_size: int = bounded(256, ge=1)


@dataclass
class Split:
    """One split's json, checked: (category id, name) sorted by id, and per listed image its
    id, file, size (W, H) and boxes (label, x1, y1, x2, y2) in that image's pixels."""

    key: str
    file: Path
    classes: list[tuple[int, str]]
    ids: list[Any]
    files: list[Path]
    sizes: list[tuple[int, int]]
    boxes: list[list[list[float]]]


def _fail(key: str, file: Path, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{key}: {file}: {problem}. {fix}")


def _read_json(key: str, file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ConfigError(
            f"{key}: {file} is not a file. Give the path of a COCO instances json, "
            f"e.g. {key}=annotations/instances_train.json"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(
            key, file, f"is not valid JSON ({error})", "Fix or re-export the file"
        ) from None
    if not isinstance(data, dict):
        raise _fail(key, file, "holds no JSON object", "Give a COCO instances json")
    for part in ("images", "annotations", "categories"):
        if not isinstance(data.get(part), list):
            problem = "has no" if part not in data else "has a non-list"
            raise _fail(
                key, file, f"{problem} {part!r} list",
                "A COCO instances json has 'images', 'annotations' and 'categories' lists; "
                "export the annotations in COCO (instances) format",
            )  # fmt: skip
    return data


def _field(key: str, file: Path, entry: Any, what: str, names: tuple[str, ...]) -> list[Any]:
    if not isinstance(entry, dict) or any(n not in entry for n in names):
        raise _fail(key, file, f"{what} {str(entry)[:80]} lacks one of {list(names)}",
                    "Fix that entry or re-export the file")  # fmt: skip
    return [entry[n] for n in names]


def _categories(key: str, file: Path, data: dict[str, Any]) -> list[tuple[int, str]]:
    found: dict[int, str] = {}
    for entry in data["categories"]:
        cid, name = _field(key, file, entry, "the category", ("id", "name"))
        if cid in found:
            raise _fail(key, file, f"category id {cid} is listed twice", "Keep one of them")
        found[cid] = str(name)
    if not found:
        raise _fail(key, file, "lists no categories", "List the object classes in 'categories'")
    return sorted(found.items())


def _box(key: str, file: Path, ann: dict[str, Any], size: tuple[int, int]) -> list[float]:
    """The annotation's [x, y, w, h] as xyxy in pixels, checked and clipped to the image."""
    aid, image_id, (w_img, h_img) = ann.get("id", "?"), ann["image_id"], size
    where = f"annotation {aid} (image {image_id}) has the bbox {ann['bbox']}"
    fix = "Fix or drop that annotation"
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise _fail(key, file, f"{where}, not [x, y, width, height]", fix)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        raise _fail(key, file, f"{where}, not four numbers", fix)
    x, y, w, h = (float(v) for v in bbox)
    if any(math.isnan(v) or math.isinf(v) for v in (x, y, w, h)):
        raise _fail(key, file, f"{where}, with a NaN or infinite value", fix)
    if w <= 0 or h <= 0:
        raise _fail(key, file, f"{where}: its width and height must be > 0", fix)
    t = TOLERANCE
    if x < -t or y < -t or x + w > w_img + t or y + h > h_img + t:
        raise _fail(
            key, file, f"{where} (x, y, width, height), which reaches outside its "
            f"{w_img}x{h_img} image by more than {t:g} pixel", f"{fix}, or clip it to the image",
        )  # fmt: skip
    x1, y1 = min(max(x, 0.0), w_img), min(max(y, 0.0), h_img)
    x2, y2 = min(x + w, float(w_img)), min(y + h, float(h_img))
    if x2 <= x1 or y2 <= y1:
        raise _fail(key, file, f"{where}, which lies outside its {w_img}x{h_img} image", fix)
    return [x1, y1, x2, y2]


def _open(key: str, file: Path):
    try:
        return open_image(file)
    except UnreadableImage as error:
        raise _fail(
            key, file, f"cannot be read as an image ({error})", "Replace that file"
        ) from None


def read_coco(cfg: COCOConfig, split: str) -> Split:
    """One split's json, every entry checked; the images are only looked for (and opened for
    their size where the json gives none)."""
    key, folder_key = f"data.{split}_annotations", f"data.{split}_images"
    file = Path(str(getattr(cfg, f"{split}_annotations"))).expanduser()
    data = _read_json(key, file)
    folder = Path(str(getattr(cfg, f"{split}_images"))).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"{folder_key}: {folder} is not a folder. Give the folder that the file_name "
            f"entries of {file} are relative to"
        )
    classes = _categories(key, file, data)
    label = {cid: i for i, (cid, _) in enumerate(classes)}
    index: dict[Any, int] = {}
    entries: list[tuple[Path, tuple[int, int] | None]] = []  # in the order of index
    for entry in data["images"]:
        image_id, name = _field(key, file, entry, "the image", ("id", "file_name"))
        if image_id in index:
            raise _fail(key, file, f"image id {image_id} is listed twice", "Keep one of them")
        path = folder / str(name)
        if not path.is_file():
            raise _fail(
                key, file, f"image {image_id} is {name!r}, which is not in {folder}",
                f"Copy it there, or set {folder_key} to the folder that holds it",
            )  # fmt: skip
        w, h = entry.get("width"), entry.get("height")
        index[image_id] = len(entries)
        entries.append(
            (path, (int(w), int(h)) if isinstance(w, int) and isinstance(h, int) else None)
        )
    if not entries:
        raise _fail(key, file, "lists no images", "Export the images with their annotations")
    sizes = [s if s is not None else _open(key, p).size for p, s in entries]
    rows: list[list[list[float]]] = [[] for _ in entries]
    crowd = 0
    for ann in data["annotations"]:
        aid = ann.get("id", "?") if isinstance(ann, dict) else "?"
        image_id, category, _ = _field(
            key, file, ann, f"annotation {aid}", ("image_id", "category_id", "bbox")
        )
        if image_id not in index:
            raise _fail(
                key, file, f"annotation {aid} names image {image_id}, which is not in 'images'",
                "List that image in 'images', or drop the annotation",
            )  # fmt: skip
        if category not in label:
            raise _fail(
                key, file, f"annotation {aid} (image {image_id}) has category_id {category}, "
                f"not one of the categories {[c for c, _ in classes]}",
                "List that category in 'categories', or fix the annotation",
            )  # fmt: skip
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        i = index[image_id]
        rows[i].append([float(label[category]), *_box(key, file, ann, sizes[i])])
    if not any(rows):
        what = (
            f"only crowd annotations ({crowd}, iscrowd=1, skipped)" if crowd else "no annotations"
        )
        raise _fail(key, file, f"empty annotations: it holds {what}",
                    "Give a file with at least one box (iscrowd=0) to learn from")  # fmt: skip
    return Split(key, file, classes, list(index), [p for p, _ in entries], sizes, rows)


def load_images(split: Split, cfg: COCOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) uint8 resized to ``cfg.image_size``, boxes scaled alike (N, K, 5)."""

    key, file = split.key, split.file
    height, width = cfg.image_size
    pixels, targets = [], []
    for image_id, path, size, boxes in zip(
        split.ids, split.files, split.sizes, split.boxes, strict=True
    ):
        image = _open(key, path)
        if image.size != size:
            raise _fail(
                key, file, f"image {image_id} ({path.name}) is {image.size[0]}x{image.size[1]} "
                f"(WxH) but 'images' says {size[0]}x{size[1]}",
                "Fix width/height there, or the image",
            )  # fmt: skip
        pixels.append(image_tensor(image, cfg.channels, cfg.image_size))
        scale = [width / size[0], height / size[1]] * 2
        box = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 5)
        box[:, 1:] = (box[:, 1:] * torch.tensor(scale, dtype=torch.float64)).clamp(
            max=torch.tensor([width, height, width, height], dtype=torch.float64)
        )
        targets.append(box.float())
    return torch.stack(pixels).contiguous(), pad_boxes(targets)


@register_dataset("coco", config=COCOConfig, task="detection")
def coco(cfg: COCOConfig) -> ClassificationData:
    """Your own boxes: data.train_annotations=<COCO json>, data.train_images=<its image folder>."""
    if (cfg.test_annotations is None) != (cfg.test_images is None):
        given, missing = (
            ("test_annotations", "test_images")
            if cfg.test_images is None
            else ("test_images", "test_annotations")
        )
        raise ConfigError(
            f"data.{given} is set but data.{missing} is not: give both (the test json and its "
            "image folder), or neither to test on a seeded data.test_fraction of the images"
        )
    train = read_coco(cfg, "train")
    test = read_coco(cfg, "test") if cfg.test_annotations is not None else None
    if test is not None and test.classes != train.classes:
        raise ConfigError(
            f"data.test_annotations: {test.file} has the categories (id, name) {test.classes}, "
            f"but {train.file} has {train.classes}. Export both with the same categories"
        )
    images, targets = load_images(train, cfg)
    if test is not None:
        parts = (images, targets), load_images(test, cfg)
    else:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.split_seed))
        n_test = round(cfg.test_fraction * len(images))
        tr, te = order[n_test:], order[:n_test]
        parts = (images[tr], targets[tr]), (images[te], targets[te])
    names = [name for _, name in train.classes]
    return build_detection_data("coco", names, parts[0], parts[1], cfg)
