"""Contract tests over every registered dataset, each fed a small sample in its real on-disk
format, so the real loading code runs. A new dataset needs a sample writer in SAMPLES."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from paralab.errors import DatasetNotFoundError
from paralab.platform.config import validate_section
from paralab.platform.data import DATASETS
from tests.platform.test_caption_data import write_caption_folder
from tests.platform.test_coco_data import write_coco
from tests.platform.test_nuclei_data import write_nuclei
from tests.platform.test_segmentation_data import write_fashion_idx, write_mask_folder


def _idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_set(folder_name):
    def write(root):
        raw = root / folder_name / "raw"
        raw.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for split, n in (("train", 120), ("t10k", 40)):
            _idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
            _idx(raw / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
        return {"root": str(root)}

    return write


def write_cifar(folder_name, train_files, test_files, meta_file, names_key, label_key, n_classes):
    def write(root):
        folder = root / folder_name
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in [*train_files, *test_files]:
            batch = {b"data": rng.integers(0, 256, (30, 3072), dtype=np.uint8),
                     label_key: list(np.arange(30) % n_classes)}  # fmt: skip
            (folder / name).write_bytes(pickle.dumps(batch))
        meta = {names_key: [f"class{i}".encode() for i in range(n_classes)]}
        (folder / meta_file).write_bytes(pickle.dumps(meta))
        return {"root": str(root)}

    return write


def write_image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "fox"):
        (root / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "imgs" / cls / f"{i}.png")
    return {"path": str(root / "imgs"), "image_size": 16}


SAMPLES = {
    "digits": lambda root: {},
    "mnist": write_idx_set("MNIST"),
    "fashion_mnist": write_idx_set("FashionMNIST"),
    "photos": lambda root: {"train_images": 40, "test_images": 20},
    "cifar10": write_cifar("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                           ["test_batch"], "batches.meta", b"label_names", b"labels", 10),
    "cifar100": write_cifar("cifar-100-python", ["train"], ["test"], "meta",
                            b"fine_label_names", b"fine_labels", 100),
    "image_folder": write_image_folder,
    "canvas_digits": lambda root: {"train_images": 40, "test_images": 20},
    "canvas_fashion": write_fashion_idx,
    "mask_folder": write_mask_folder,
    "canvas_digits_boxes": lambda root: {"train_images": 40, "test_images": 20},
    "canvas_fashion_boxes": write_fashion_idx,
    "coco": write_coco,
    "nuclei": write_nuclei,
    "canvas_digits_captions": lambda root: {"train_images": 40, "test_images": 20},
    "canvas_fashion_captions": write_fashion_idx,
    "caption_folder": write_caption_folder,
}  # fmt: skip


def load(name, root, **options):
    entry = DATASETS.get(name)
    values = {"name": name, **SAMPLES[name](root), **options}
    return entry.obj(validate_section("data", values, entry.config))


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_a_sample(name):
    assert name in SAMPLES, f"add a sample writer for dataset {name!r} to SAMPLES"


@pytest.mark.parametrize("name", DATASETS.names())
def test_shapes_labels_and_splits(name, tmp_path):
    data = load(name, tmp_path, val_fraction=0.2)
    assert data.task == DATASETS.get(name).meta["task"]
    n_train, n_val = len(data.train), len(data.val)
    assert n_val == pytest.approx(0.25 * n_train, abs=2)
    for split in (data.train, data.val, data.test):
        x, _ = split[0]
        assert x.dtype == torch.float32
        assert x.shape == (data.in_channels, *data.image_size)
        per_row = data.task in ("detection", "image_text")  # class in column 0
        labels = split.targets[..., 0] if per_row else split.targets
        labels = labels[labels >= 0] if data.task == "detection" else labels  # -1: padding
        assert int(labels.min()) >= 0 and int(labels.max()) < data.num_classes
        if data.task == "image_text":  # caption indices into data.captions; -1: padding
            captions = split.targets[:, 1:]
            assert int(captions.min()) >= -1 and int(captions.max()) < len(data.captions)
    x, _y = data.train.__getitems__([0, 1, 2])
    assert torch.allclose(x, torch.stack([data.train[i][0] for i in range(3)]))
    assert torch.isclose(
        data.train.__getitems__(range(n_train))[0].mean(), torch.tensor(0.0), atol=1e-3
    )


@pytest.mark.parametrize("name", DATASETS.names())
def test_splits_are_deterministic_for_a_seed(name, tmp_path):
    a = load(name, tmp_path / "a", split_seed=3)
    b = load(name, tmp_path / "b", split_seed=3)
    c = load(name, tmp_path / "c", split_seed=4)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.targets, b.val.targets)
    assert not torch.equal(a.val.images, c.val.images)


def test_train_limit_caps_the_training_split(tmp_path):
    assert len(load("digits", tmp_path, train_limit=100).train) == 100


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_data_says_where_it_looked_and_how_to_get_it(name, tmp_path):
    entry = DATASETS.get(name)
    cfg = validate_section("data", {"name": name, "root": str(tmp_path)}, entry.config)
    with pytest.raises(DatasetNotFoundError, match=rf"(?s){tmp_path}.*download=true"):
        entry.obj(cfg)


def test_augmentations_keep_shape_and_move_pixels():
    from paralab.platform.data.augment import augment_batch

    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment_batch(x, ["hflip", "crop"])
    assert out.shape == x.shape
    assert not torch.equal(out, x)
