"""Image-text data: canvas captions say what the canvases show (class, count, size, position),
are seeded, keep held-out compositions out of training; caption folders round-trip (csv and
jsonl) and refuse broken input naming the file, the row and the fix. ``write_caption_folder`` is
the sample writer the dataset contract tests (test_datasets.py) use."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from paralab.errors import ConfigError
from paralab.platform.config import validate_section
from paralab.platform.data import DATASETS
from paralab.platform.data.base import DataConfig
from paralab.platform.data.canvas_captions import (
    COUNT_WORDS,
    FASHION_CLASSES,
    POSITIONS,
    CaptionCanvasConfig,
    Captioner,
    captions_of,
    held_out_compositions,
    make_caption_canvases,
    nouns_for,
)
from paralab.platform.data.captions import CaptionedImages, build_caption_data


def load(name: str, **options):
    entry = DATASETS.get(name)
    return entry.obj(validate_section("data", {"name": name, **options}, entry.config))


def canvases(**options):
    return load("canvas_digits_captions", **{"train_images": 200, "test_images": 100, **options})


def test_captions_say_what_the_canvas_shows():
    """Items are solid squares whose grey level says their class, so each canvas's class, item
    boxes, size and position can be read back from its pixels."""
    cfg = CaptionCanvasConfig(canvas_size=32, item_size=8, items_max=3)
    items = (60 + 20 * torch.arange(10, dtype=torch.uint8)).view(10, 1, 1, 1).expand(10, 1, 8, 8)
    pairs = torch.tensor([(c, k) for c in range(10) for k in (1, 2, 3)])
    made = make_caption_canvases(items.contiguous(), torch.arange(10), 300, cfg, 5, pairs)
    captioner = Captioner(nouns_for(FASHION_CLASSES))
    targets, p = captioner.targets(made), made.placements
    assert targets.shape == (300, 4) and made.count.bincount().tolist() == [0, 100, 100, 100]
    middle, third = 8 * (0.75 + 1.5) / 2, 32 / 3
    for i, (image, row) in enumerate(zip(made.images[:, 0], targets.tolist(), strict=True)):
        label, count = row[0], int(made.count[i])
        lit = image > 0
        assert set(image[lit].tolist()) == {60 + 20 * label}  # one class, the caption's
        mine = p.canvas == i
        assert int(mine.sum()) == count
        first = captioner.captions[row[1]]
        singular, plural = nouns_for(FASHION_CLASSES)[label]
        said = "a" if count == 1 else COUNT_WORDS[count]  # then "small" or "large"
        assert first.startswith(f"a photo of {said} ")
        assert (singular if count == 1 else plural) in first
        if count == 1:  # the lit pixels are the item's box
            ys, xs = lit.nonzero(as_tuple=True)
            side = int(xs.max() - xs.min() + 1)
            cy, cx = (float(v.min() + v.max() + 1) / 2 for v in (ys, xs))
        else:
            side = float(p.size[mine].double().mean())
            cy = float((p.top[mine] + p.size[mine] / 2).double().mean())
            cx = float((p.left[mine] + p.size[mine] / 2).double().mean())
        assert ("large" if side > middle else "small") in first.split()
        row_third, column_third = (int(v >= third) + int(v > 2 * third) for v in (cy, cx))
        assert first.endswith(POSITIONS[row_third * 3 + column_third])
        texts = [captioner.captions[j] for j in row[1:]]
        assert len(set(texts)) == 3


def test_phrasings_are_readable():
    trousers = ("pair of trousers", "pairs of trousers")
    assert captions_of(trousers, 1, 0, 3) == [
        "a photo of a small pair of trousers on the left",
        "a photo of a pair of trousers",
        "a small pair of trousers on the left",
        "a picture of a pair of trousers on the left",
        "a small pair of trousers",
        "there is a pair of trousers on the left",
    ]
    assert captions_of(("ankle boot", "ankle boots"), 1, -1, 4)[1] == "a photo of an ankle boot"
    two = captions_of(nouns_for(["3"])[0], 2, 1, 8)
    assert two[0] == "a photo of two large 3s at the bottom right"
    assert two[3] == "a picture of 3s at the bottom right"
    assert two[5] == "there are two 3s at the bottom right"
    one = captions_of(nouns_for(["3"])[0], 1, 0, 0)
    assert one[0] == "a photo of a small digit 3 at the top left"


def _compositions(data, split: CaptionedImages) -> list[tuple[int, int]]:
    """(class, count) read from each image's first caption ("a photo of two small 3s ...")."""
    out = []
    for label, first in split.targets[:, :2].tolist():
        words = data.captions[first].split()
        count = COUNT_WORDS.index(words[3])
        digit = re.search(r"digit (\d)|(\d)s", data.captions[first])
        assert int(digit.group(1) or digit.group(2)) == label
        out.append((label, count))
    return out


def test_held_out_compositions_are_only_in_the_test_split():
    data = canvases(test_images=400)
    held = held_out_compositions(10, CaptionCanvasConfig())
    assert len(held) == 4  # 0.2 of the 10 x 2 pairs
    assert {c for c, _ in held} != set(range(10)) and len({c for c, _ in held}) == 4
    train = set(_compositions(data, data.train)) | set(_compositions(data, data.val))
    assert not train & set(held)
    assert train | set(held) == {(c, k) for c in range(10) for k in (1, 2)}
    test = _compositions(data, data.test)
    assert set(test) == {(c, k) for c in range(10) for k in (1, 2)}  # balanced: 20 each
    assert data.test.held_out.tolist() == [pair in held for pair in test]
    assert int(data.test.held_out.sum()) == 80
    assert not data.train.held_out.any() and not data.val.held_out.any()
    part = data.test.subset(torch.tensor([0, 1, 2]))
    assert isinstance(part, CaptionedImages) and torch.equal(part.held_out, data.test.held_out[:3])
    assert held_out_compositions(10, CaptionCanvasConfig(seed=1)) != held


def test_canvas_captions_are_seeded_and_every_index_is_valid():
    a, b, c = canvases(seed=3), canvases(seed=3), canvases(seed=4)
    assert a.task == "image_text" and a.classes == [str(d) for d in range(10)]
    assert a.captions == b.captions and len(set(a.captions)) == len(a.captions)
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.images, y.images) and torch.equal(x.targets, y.targets)
        assert x.targets.shape[1] == 4 and x.targets.dtype == torch.long
        indices = x.targets[:, 1:]
        assert int(indices.min()) >= 0 and int(indices.max()) < len(a.captions)
    assert not torch.equal(a.test.images, c.test.images)
    used = torch.cat([s.targets[:, 1:].flatten() for s in (a.train, a.val, a.test)]).unique()
    assert len(used) == len(a.captions)  # every caption is some image's
    x, y = a.train.__getitems__([0, 1])
    assert x.shape == (2, 1, 64, 64) and torch.equal(y, a.train.targets[:2])


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"augment": ["hflip"]}, r"data\.augment=\[\]"),
        ({"label_fraction": 0.5}, "data.label_fraction=null"),
        ({"held_out_fraction": 0.6}, "data.held_out_fraction=0.5 or less"),
        ({"items_max": 1}, "data.held_out_fraction=0.0 or less"),
    ],
)
def test_canvas_options_that_cannot_work_are_refused(options, words):
    with pytest.raises(ConfigError, match=words):
        canvases(**options)


def test_bad_caption_targets_are_refused_naming_the_image():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    good = torch.tensor([[0, 0, -1], [1, 1, 0], [0, 1, -1], [1, 0, 1]])
    cfg = DataConfig(val_fraction=0)
    data = build_caption_data("toy", ["a", "b"], ["x", "y"], (images, good), (images, good), cfg)
    assert data.captions == ["x", "y"] and isinstance(data.val, CaptionedImages)
    for bad, words in (([1, 2, -1], "caption index outside 0..1"), ([2, 0, -1], "class id"),
                       ([1, -1, -1], "no caption"), ([1, -1, 0], "padding before")):  # fmt: skip
        targets = good.clone()
        targets[2] = torch.tensor(bad)
        with pytest.raises(ConfigError, match=rf"test: the image at index 2 has .*{words}"):
            build_caption_data("toy", ["a", "b"], ["x", "y"], (images, good), (images, targets),
                               cfg)  # fmt: skip
    with pytest.raises(ConfigError, match=r"caption 1 .*the train image at index 1.*is empty"):
        build_caption_data("toy", ["a", "b"], ["x", " "], (images, good), (images, good), cfg)


# --- caption_folder --------------------------------------------------------------------------


def _rows(n: int) -> list[dict[str, str]]:
    """Image i has 1 + i % 3 captions (one shared by several images) and label dog/cat."""
    rows = []
    for i in range(n):
        texts = [f"picture number {i}, alone", "a random picture", f"noise {i}"][: 1 + i % 3]
        rows += [{"file": f"pics/{i}.png", "caption": t, "label": ["dog", "cat"][i % 2]}
                 for t in texts]  # fmt: skip
    return rows


def write_caption_folder(root: Path, n: int = 20, fmt: str = "csv", labels: bool = True) -> dict:
    """n RGB PNGs (24 wide, 20 high; image i all (10 i, 255 - 10 i, 7)) in root/pics and their
    captions (:func:`_rows`) in root/captions.csv or .jsonl; returns the data options."""
    from PIL import Image

    (root / "pics").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((20, 24, 3), (10 * i, 255 - 10 * i, 7), np.uint8)).save(
            root / "pics" / f"{i}.png"
        )
    rows = [{k: v for k, v in r.items() if labels or k != "label"} for r in _rows(n)]
    if fmt == "csv":
        with (root / "captions.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"path": str(root), "image_size": [16, 16]}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_caption_folder_round_trips(tmp_path, fmt):
    options = write_caption_folder(tmp_path, n=6, fmt=fmt)
    data = load("caption_folder", **options, test_path=options["path"], val_fraction=0)
    assert data.task == "image_text" and data.classes == ["dog", "cat"]  # order first met
    assert data.image_size == (16, 16) and data.in_channels == 3 and len(data.test) == 6
    assert data.test.images[:, 0, 0, 0].tolist() == [10 * i for i in range(6)]  # file order
    assert data.captions[:3] == ["picture number 0, alone", "picture number 1, alone",
                                 "a random picture"]  # fmt: skip
    for i, row in enumerate(data.test.targets.tolist()):
        assert data.classes[row[0]] == ("dog", "cat")[i % 2]
        texts = [data.captions[j] for j in row[1:] if j >= 0]
        assert (
            texts == [f"picture number {i}, alone", "a random picture", f"noise {i}"][: 1 + i % 3]
        )
        assert row[1 + len(texts) :] == [-1] * (3 - len(texts))


def test_caption_folder_without_labels_grey_and_a_seeded_test_fraction(tmp_path):
    options = write_caption_folder(tmp_path, n=10, fmt="jsonl", labels=False)
    data = load("caption_folder", **options, channels=1, test_fraction=0.3, val_fraction=0)
    assert data.classes == ["image"] and data.in_channels == 1
    assert (len(data.train), len(data.test)) == (7, 3)
    assert int(data.train.targets[:, 0].max()) == 0
    again = load("caption_folder", **options, channels=1, test_fraction=0.3, val_fraction=0)
    assert torch.equal(again.test.targets, data.test.targets)


def _break(root: Path, how: str) -> dict:
    """Damage the csv sample; returns overrides for the load."""
    file = root / "captions.csv"
    lines = file.read_text().splitlines()
    if how == "missing image":
        (root / "pics" / "3.png").unlink()
    elif how == "empty caption":
        lines[4] = "pics/2.png,,dog"
    elif how == "no rows":
        lines = lines[:1]
    elif how == "no column":
        lines[0] = "file,text,label"
    elif how == "no label":
        lines[2] = "pics/1.png,a cat,"
    elif how == "two labels":
        lines[3] = "pics/1.png,a dog,dog"
    elif how == "both files":
        (root / "captions.jsonl").write_text("")
    elif how == "no file":
        file.unlink()
    elif how == "no folder":
        return {"path": str(root / "nowhere")}
    if file.exists():
        file.write_text("\n".join(lines) + "\n")
    return {}


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("missing image", r"line 8: the image pics/3\.png is not in .*Copy it there"),
        ("empty caption", r"captions\.csv, line 5: the caption of pics/2\.png is empty"),
        ("no rows", "has no caption rows"),
        ("no column", r"lacks the column\(s\) \['caption'\]"),
        ("no label", r"line 3: the image pics/1\.png has no label, but other rows do"),
        ("two labels", r"pics/1\.png has the labels \['cat', 'dog'\]"),
        ("both files", "holds both captions.csv and captions.jsonl"),
        ("no file", "has no caption file"),
        ("no folder", "nowhere is not a folder"),
    ],
)
def test_broken_caption_folders_are_refused_naming_the_row_and_the_fix(tmp_path, how, words):
    options = write_caption_folder(tmp_path, n=8)
    with pytest.raises(ConfigError, match=words):
        load("caption_folder", **{**options, **_break(tmp_path, how)})


def test_a_bad_jsonl_line_is_named(tmp_path):
    options = write_caption_folder(tmp_path, n=4, fmt="jsonl")
    file = tmp_path / "captions.jsonl"
    file.write_text(file.read_text() + "{not json\n")
    with pytest.raises(ConfigError, match=r"captions\.jsonl, line 8: is not valid JSON"):
        load("caption_folder", **options)
