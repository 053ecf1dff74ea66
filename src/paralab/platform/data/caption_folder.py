"""A user's own image-caption pairs: ``data.path=<folder>`` with its images and a caption file.

Why: the canvas caption sets teach the mechanics; real work needs the user's own captions, and
the first things that go wrong with them are the file (a column name, a line that is not JSON)
and the images (a file listed but not copied along). So every such problem is found where the
dataset is built, before any run folder exists, and reported once, naming the file, the row
and the fix.

The folder holds ``captions.csv`` (columns ``file,caption``, optionally ``label``) or
``captions.jsonl`` (one ``{"file": ..., "caption": ..., "label": ...}`` per line; ``label``
optional). ``file`` is relative to the folder. Several rows for one file are its several
phrasings (targets hold P = the most any image has; -1 pads the others). An image's class
(targets column 0) is its ``label`` (classes in the order first met, training file first);
without a label column every image is class 0 of ``["image"]``. Images are resized to
``data.image_size`` ([height, width], bilinear) as ``channels`` 1 (grey) or 3 (RGB).
``data.test_path`` (a folder of the same form) is the test split; without one, a seeded
``data.test_fraction`` of the images is.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.data.base import ClassificationData
from paralab.platform.data.captions import PAD, build_caption_data
from paralab.platform.data.image_files import (
    ImageFilesConfig,
    UnreadableImage,
    image_tensor,
    open_image,
)
from paralab.platform.data.registry import register_dataset

CAPTION_FILES = ("captions.csv", "captions.jsonl")
NO_LABEL = "image"  # the one class when no row has a label


@dataclass
class CaptionFolderConfig(ImageFilesConfig):
    name: str = "caption_folder"
    path: str = "???"  # a folder with images and captions.csv or captions.jsonl
    test_path: str | None = None  # null: a seeded test_fraction of the images is the test split
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int = bounded(256, ge=1)


@dataclass
class Row:
    """One caption row: where it is (for messages), its image, caption and label."""

    where: str
    file: str
    caption: str
    label: str | None


def _fail(where: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}. {fix}")


def caption_file(key: str, folder: Path) -> Path:
    """The folder's caption file, one of :data:`CAPTION_FILES`."""
    if not folder.is_dir():
        raise ConfigError(
            f"{key}: {folder} is not a folder. Give a folder holding the images and "
            "captions.csv (file,caption) or captions.jsonl"
        )
    found = [folder / name for name in CAPTION_FILES if (folder / name).is_file()]
    if len(found) != 1:
        problem = "holds both captions.csv and captions.jsonl" if found else "has no caption file"
        raise _fail(
            f"{key}: {folder}", problem,
            "Give exactly one: captions.csv with the columns file,caption (and optionally "
            'label), or captions.jsonl with one {"file": ..., "caption": ...} per line',
        )  # fmt: skip
    return found[0]


def _csv_rows(file: Path) -> list[tuple[str, dict[str, Any]]]:
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in ("file", "caption") if c not in columns]
        if missing:
            raise _fail(
                str(file), f"the header {columns} lacks the column(s) {missing}",
                "Its first line must name the columns, e.g. file,caption or file,caption,label",
            )  # fmt: skip
        return [(f"{file}, line {reader.line_num}", row) for row in reader]


def _jsonl_rows(file: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise _fail(where, f"is not valid JSON ({error})", "Fix that line") from None
        if not isinstance(entry, dict) or "file" not in entry or "caption" not in entry:
            raise _fail(where, f"{line[:80]!r} is not an object with 'file' and 'caption'",
                        'Write {"file": "a.png", "caption": "a cat"} per line')  # fmt: skip
        rows.append((where, entry))
    return rows


def read_rows(key: str, folder: Path) -> list[Row]:
    """The caption rows of a folder, each checked: its image is there, its caption not empty."""
    file = caption_file(key, folder)
    raw = _csv_rows(file) if file.suffix == ".csv" else _jsonl_rows(file)
    if not raw:
        raise _fail(str(file), "has no caption rows", "Add one row per (image, caption) pair")
    rows = []
    for where, entry in raw:
        name, caption = str(entry.get("file") or ""), entry.get("caption")
        if not name.strip():
            raise _fail(where, "names no image file", "Give the image's path in 'file'")
        if not isinstance(caption, str) or not caption.strip():
            raise _fail(where, f"the caption of {name} is empty",
                        "Write a caption for that image, or drop the row")  # fmt: skip
        if not (folder / name).is_file():
            raise _fail(where, f"the image {name} is not in {folder}",
                        "Copy it there, or fix or drop the row")  # fmt: skip
        label = entry.get("label")
        label = None if label is None or str(label).strip() == "" else str(label).strip()
        rows.append(Row(where, name, caption.strip(), label))
    return rows


def _open(where: str, file: Path):
    try:
        return open_image(file)
    except UnreadableImage as error:
        raise _fail(where, f"{file} cannot be read as an image ({error})", "Replace it") from None


class Tables:
    """Captions and classes shared by the splits, numbered in the order first met."""

    def __init__(self, labelled: bool) -> None:
        self.labelled = labelled
        self.captions: list[str] = []
        self.classes: list[str] = [] if labelled else [NO_LABEL]
        self._caption: dict[str, int] = {}

    def caption(self, text: str) -> int:
        if text not in self._caption:
            self._caption[text] = len(self.captions)
            self.captions.append(text)
        return self._caption[text]

    def label(self, row: Row) -> int:
        if not self.labelled:
            return 0
        if row.label is None:
            raise _fail(row.where, f"the image {row.file} has no label, but other rows do",
                        "Give every row a label, or none")  # fmt: skip
        if row.label not in self.classes:
            self.classes.append(row.label)
        return self.classes.index(row.label)


def load_split(
    rows: list[Row], folder: Path, tables: Tables, cfg: CaptionFolderConfig
) -> tuple[torch.Tensor, list[list[int]]]:
    """Images (N, C, H, W) uint8 in the order first listed, and per image its class id followed
    by its caption indices."""

    order: dict[str, list[Row]] = {}
    for row in rows:
        order.setdefault(row.file, []).append(row)
    images, targets = [], []
    for name, its in order.items():
        labels = {tables.label(row) for row in its}
        if len(labels) > 1:
            names = sorted({str(row.label) for row in its})
            raise _fail(its[-1].where, f"the image {name} has the labels {names}",
                        "Give one label per image")  # fmt: skip
        images.append(
            image_tensor(_open(its[0].where, folder / name), cfg.channels, cfg.image_size)
        )
        indices = list(dict.fromkeys(tables.caption(row.caption) for row in its))
        targets.append([labels.pop(), *indices])
    return torch.stack(images).contiguous(), targets


def _pad(targets: list[list[int]], width: int) -> torch.Tensor:
    return torch.tensor([row + [PAD] * (width - len(row)) for row in targets], dtype=torch.long)


@register_dataset("caption_folder", config=CaptionFolderConfig, task="image_text")
def caption_folder(cfg: CaptionFolderConfig) -> ClassificationData:
    """Your own captions: data.path=<folder with images and captions.csv or captions.jsonl>."""
    root = Path(cfg.path).expanduser()
    rows = read_rows("data.path", root)
    test_root = Path(cfg.test_path).expanduser() if cfg.test_path is not None else None
    test_rows = read_rows("data.test_path", test_root) if test_root is not None else []
    labelled = any(row.label is not None for row in rows + test_rows)
    tables = Tables(labelled)
    images, targets = load_split(rows, root, tables, cfg)
    parts = [(images, targets)]
    if test_root is not None:
        parts.append(load_split(test_rows, test_root, tables, cfg))
    width = max(len(row) for _, split in parts for row in split)
    if test_root is not None:
        train, test = ((i, _pad(t, width)) for i, t in parts)
    else:
        padded = _pad(targets, width)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.split_seed))
        n_test = round(cfg.test_fraction * len(images))
        tr, te = order[n_test:], order[:n_test]
        train, test = (images[tr], padded[tr]), (images[te], padded[te])
    return build_caption_data("caption_folder", tables.classes, tables.captions, train, test, cfg)
