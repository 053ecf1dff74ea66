"""The nuclei detection set: tiles of an image with an instance mask, fed a tiny synthetic pair
of 16-bit TIFFs in the modes of stardist's files (and the real files where installed)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import paralab
from paralab.errors import ConfigError, DatasetNotFoundError
from paralab.platform.config import validate_section
from paralab.platform.data import DATASETS
from paralab.platform.data import nuclei as module
from paralab.platform.data.nuclei import NucleiConfig, regions, tile_boxes, tile_origins

SIDE = 96
OPTIONS = {"tile_size": 32, "tile_stride": 8, "test_width": 0.4}  # cut at column 58


def sample_mask() -> np.ndarray:
    """Square instances with ids that need 16 bits; (y, x) slices."""
    mask = np.zeros((SIDE, SIDE), np.uint16)
    mask[6:14, 4:12] = 1  # training columns
    mask[36:44, 22:30] = 2  # training columns, across the tile edge at x=26
    mask[80:82, 40:42] = 5  # 4 px: below min_pixels=8 everywhere
    mask[20:30, 66:76] = 7  # test columns
    mask[60:70, 80:90] = 300  # test columns, across the tile edge at y=64
    return mask


def write_nuclei(root: Path, image: np.ndarray | None = None) -> dict:
    """``img2d.tif`` and ``mask2d.tif`` as stardist ships them (PIL mode I;16), and the options
    that load them: 45 training and 18 test 32 px tiles."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    mask = sample_mask()
    if image is None:
        noise = np.random.default_rng(0).integers(0, 20, (SIDE, SIDE))
        image = 100 + noise + 900 * (mask > 0)
    Image.fromarray(image.astype(np.uint16)).save(root / "img2d.tif")
    Image.fromarray(mask).save(root / "mask2d.tif")
    return {"root": str(root), **OPTIONS}


def load(**options):
    entry = DATASETS.get("nuclei")
    return entry.obj(validate_section("data", {"name": "nuclei", **options}, entry.config))


def rows(targets: torch.Tensor) -> list[list[list[float]]]:
    return [[r.tolist() for r in t if r[0] >= 0] for t in targets]


def test_sample_files_have_the_real_files_modes(tmp_path):
    from PIL import Image

    write_nuclei(tmp_path)
    for name in ("img2d.tif", "mask2d.tif"):
        with Image.open(tmp_path / name) as image:
            assert image.mode == "I;16" and image.size == (SIDE, SIDE)


def test_registered_for_detection_and_the_yaml_matches_the_schema(tmp_path):
    assert DATASETS.get("nuclei").meta["task"] == "detection"
    yaml = Path(paralab.__file__).parent / "configs" / "data" / "nuclei.yaml"
    values = {**OmegaConf.to_container(OmegaConf.load(yaml)), **write_nuclei(tmp_path)}
    assert validate_section("data", values, NucleiConfig) == NucleiConfig(**values)


def test_boxes_are_the_tight_boxes_of_the_instances_in_each_tile(tmp_path):
    options = {**write_nuclei(tmp_path), "tile_stride": 32}  # tiles at rows 0, 32, 64
    data = load(**options, val_fraction=0)
    assert data.classes == ["nucleus"] and data.in_channels == 1
    assert data.image_size == (32, 32)
    # training columns 0 and 26 (flush with the cut at 58); the split shuffles them
    assert sorted(rows(data.train.targets)) == sorted([
        [[0, 4, 6, 12, 14]], [], [[0, 22, 4, 30, 12]], [[0, 0, 4, 4, 12]], [], []
    ])  # fmt: skip
    # test columns 58 and 64 (flush with the right edge)
    assert rows(data.test.targets) == [
        [[0, 8, 20, 18, 30]], [[0, 2, 20, 12, 30]],
        [[0, 22, 28, 32, 32]], [[0, 16, 28, 26, 32]],
        [[0, 22, 0, 32, 6]], [[0, 16, 0, 26, 6]],
    ]  # fmt: skip


def test_slivers_below_min_pixels_are_dropped(tmp_path):
    options = {**write_nuclei(tmp_path), "tile_stride": 32}
    # instance 2 shows 32 px in the tile at x=26; instance 5 has 4 px in all
    boxes = sorted(rows(load(**options, val_fraction=0, min_pixels=33).train.targets))
    assert boxes == [[], [], [], [], [[0, 4, 6, 12, 14]], [[0, 22, 4, 30, 12]]]
    small = sorted(rows(load(**options, val_fraction=0, min_pixels=4).train.targets))
    assert [[0, 14, 16, 16, 18]] in small and sum(not t for t in small) == 2  # not 3
    tile = np.zeros((6, 6), np.int64)
    tile[0:2, 1:5], tile[5, 5] = 3, 9  # 8 px and 1 px
    assert tile_boxes(tile, 2).tolist() == [[0, 1, 0, 5, 2]]
    assert tile_boxes(tile, 1).tolist() == [[0, 1, 0, 5, 2], [0, 5, 5, 6, 6]]


def test_train_and_test_tiles_come_from_disjoint_columns(tmp_path):
    cfg = NucleiConfig(**OPTIONS)
    spans = {}
    for split, columns in regions(SIDE, cfg.test_width).items():
        xs = {x for _, x in tile_origins(SIDE, columns, cfg)}
        spans[split] = (min(xs), max(xs) + cfg.tile_size)
    assert spans == {"train": (0, 58), "test": (58, 96)}
    ramp = np.tile(np.arange(SIDE) * 10, (SIDE, 1))  # a pixel's value grows with its column
    data = load(**write_nuclei(tmp_path, image=ramp), val_fraction=0)
    assert (len(data.train), len(data.test)) == (45, 18)
    assert int(data.train.images.max()) < int(data.test.images.min())


def test_dihedral_adds_the_flips_and_turns_of_training_tiles(tmp_path):
    options = write_nuclei(tmp_path)
    plain = load(**options, val_fraction=0)
    turned = load(**options, val_fraction=0, dihedral=True)
    assert len(turned.train) == 8 * len(plain.train) and len(turned.test) == len(plain.test)
    image, mask = module.load_nuclei(options["root"])
    cfg = NucleiConfig(**OPTIONS, dihedral=True)
    x, targets = module.make_tiles(image, mask, "train", cfg)  # in order: 8 copies per tile
    n = (targets[..., 0] >= 0).sum(1).view(-1, 8)
    assert torch.equal(n, n[:, :1].expand(-1, 8))  # every copy keeps its boxes
    x = x[:8, 0]
    assert torch.equal(x[2], torch.rot90(x[0], 1)) and torch.equal(x[1], x[0].flip(-1))
    assert targets[1, 0, 1:].tolist() == [32 - 12, 6, 32 - 4, 14]  # instance 1 (x 4..12) flipped
    assert targets[2, 0, 1:].tolist() == [6, 32 - 12, 14, 32 - 4]  # turned a quarter left


def test_missing_files_say_where_and_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match=rf"(?s){tmp_path}.*--no-deps stardist.*root"):
        load(root=str(tmp_path))
    monkeypatch.setattr(module, "_installed_folder", lambda: None)
    monkeypatch.setenv("PARALAB_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match=r"(?s)cache.*not installed.*make data"):
        load()


def test_a_region_narrower_than_a_tile_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.tile_size=38 or less"):
        load(**{**write_nuclei(tmp_path), "tile_size": 40})  # test columns 58..96


INSTALLED = module._installed_folder()


@pytest.mark.skipif(
    INSTALLED is None or not (INSTALLED / "mask2d.tif").is_file(),
    reason="the stardist files are not installed (pip install --no-deps stardist)",
)
def test_the_real_image_loads_with_its_nuclei():
    data = load(val_fraction=0)
    assert (len(data.train), len(data.test)) == (667, 116)  # 23 x 29 and 4 x 29 tiles
    assert data.train.images.shape[1:] == (1, 64, 64)
    counts = (data.test.targets[..., 0] >= 0).sum(1)
    assert int(counts.min()) >= 1 and 250 < int(counts.sum()) < 400  # measured: 313
    assert 2.0 < float((data.train.targets[..., 0] >= 0).sum(1).float().mean()) < 5.0  # 3.3
