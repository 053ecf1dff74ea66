"""Rotation and jigsaw pretext tasks: the views are what they claim to be, the jigsaw classes are
a fixed set of distant permutations, bad grids are refused, and short runs on digits learn."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import paralab
from paralab.errors import ConfigError
from paralab.platform.tasks import TASKS
from paralab.platform.tasks.pretext import jigsaw
from paralab.platform.tasks.pretext.base import PretextOutput
from paralab.platform.tasks.pretext.jigsaw import (
    min_hamming,
    permutation_set,
    shuffle_tiles,
    unshuffle_tiles,
)

CLASSES = ["a", "b", "c"]


def task(name: str, **options):
    entry = TASKS.get(name)
    return entry.obj(entry.config(**options), CLASSES)


def batch(n: int = 5, side: int = 6, channels: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, channels, side, side, generator=generator)
    return images, torch.arange(n) % len(CLASSES)


def tile(image: torch.Tensor, index: int, grid: int) -> torch.Tensor:
    """Tile ``index`` (row by row) of one (C, H, W) image, cut out by plain slicing."""
    h, w = image.shape[1] // grid, image.shape[2] // grid
    row, col = divmod(index, grid)
    return image[:, row * h : (row + 1) * h, col * w : (col + 1) * w]


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_gives_every_image_in_four_turns_block_by_block():
    rotation = task("rotation")
    images, labels = batch()
    inputs, targets = rotation.unpack((images, labels))
    n = len(images)
    assert inputs.views.shape == (4 * n, *images.shape[1:]) and inputs.plain is images
    for r in range(4):
        block = inputs.views[r * n : (r + 1) * n]
        assert torch.equal(block, torch.rot90(images, r, dims=(2, 3)))
        assert torch.equal(torch.rot90(block, -r, dims=(2, 3)), images)  # turned back: the same
        assert targets.pretext[r * n : (r + 1) * n].tolist() == [r] * n
    # a quarter turn moves the top-left pixel to the bottom-left (counter-clockwise)
    assert torch.equal(inputs.views[n : 2 * n, :, -1, 0], images[:, :, 0, 0])
    assert torch.equal(targets.labels, labels) and rotation.count(targets) == n
    assert rotation.num_outputs == 4 and rotation.pretext_names() == ["0°", "90°", "180°", "270°"]
    logits = torch.nn.functional.one_hot(targets.pretext, 4).float() * 20
    assert float(rotation.loss(PretextOutput(logits, None), targets)) < 1e-6


def test_rotation_refuses_non_square_images():
    config = SimpleNamespace(data=SimpleNamespace(name="wide"), model=SimpleNamespace(name="cnn"))
    data = SimpleNamespace(task="classification", image_size=(8, 12))
    with pytest.raises(ConfigError, match=r"data=wide gives 8x12.*Resize the images to a square"):
        task("rotation").check(config, data)
    task("rotation").check(config, SimpleNamespace(task="classification", image_size=(8, 8)))


# -- jigsaw: the permutation classes -------------------------------------------------------------


def test_jigsaw_permutations_are_valid_distinct_and_start_with_the_identity():
    for grid, n in [(2, 24), (3, 64), (3, 100), (4, 64)]:
        perms = permutation_set(grid, n)
        tiles = grid * grid
        assert perms.shape == (n, tiles)
        assert torch.equal(perms.sort(1).values, torch.arange(tiles).expand(n, tiles))
        assert len(torch.unique(perms, dim=0)) == n
        assert perms[0].tolist() == list(range(tiles))
    everything = {tuple(p) for p in permutation_set(2, 24).tolist()}
    assert len(everything) == math.factorial(4)  # grid 2: all 4! orders


def test_jigsaw_permutations_keep_far_apart():
    # grid 2 holds all 24 orders, so two of them differ by one swap; a greedy max-min choice
    # of 64 among 9! keeps every pair apart in at least 7 of the 9 places
    assert min_hamming(permutation_set(2, 24)) == 2
    assert min_hamming(permutation_set(3, 64)) >= 7
    assert min_hamming(permutation_set(3, 100)) >= 6
    assert min_hamming(permutation_set(2, 6)) >= 3  # the first 6 of 24 are chosen far apart too


def test_jigsaw_permutation_set_is_the_same_in_every_construction_and_process():
    first = permutation_set(3, 64)
    jigsaw._permutation_set.cache_clear()
    assert torch.equal(permutation_set(3, 64), first)
    first[0, 0] = 5  # a caller's copy: the cached set stays intact
    assert permutation_set(3, 64)[0, 0] == 0
    code = (
        "import json; from paralab.platform.tasks.pretext.jigsaw import permutation_set; "
        "print(json.dumps(permutation_set(3, 64).tolist()))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == permutation_set(3, 64).tolist()
    assert permutation_set(3, 100)[:64].tolist() == permutation_set(3, 64).tolist()  # greedy


# -- jigsaw: tiles -------------------------------------------------------------------------------


def test_shuffle_tiles_moves_whole_tiles_and_unshuffle_puts_them_back():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    swapped = shuffle_tiles(image, torch.tensor([[1, 0, 3, 2]]), 2)
    assert swapped[0, 0].tolist() == [[2, 3, 0, 1], [6, 7, 4, 5], [10, 11, 8, 9], [14, 15, 12, 13]]
    for grid, side in [(2, 6), (3, 6), (3, 12), (4, 8)]:
        images, _ = batch(n=4, side=side, channels=3)
        perms = permutation_set(grid, 24)[torch.tensor([0, 5, 11, 23])]
        shuffled = shuffle_tiles(images, perms, grid)
        assert shuffled.shape == images.shape
        for i in range(len(images)):
            for j in range(grid * grid):
                moved = tile(shuffled[i], j, grid)
                assert torch.equal(moved, tile(images[i], int(perms[i, j]), grid))
        assert torch.equal(unshuffle_tiles(shuffled, perms, grid), images)
        assert torch.equal(shuffled[0], images[0])  # the identity leaves the image as it is


def test_jigsaw_evaluates_fixed_puzzles_and_trains_on_random_ones():
    puzzle = task("jigsaw", grid=3, permutations=10)
    images, labels = batch(n=25, side=6)
    with torch.no_grad():  # evaluation: image i gets permutation i % 10, every time
        inputs, targets = puzzle.unpack((images, labels))
        again, _ = puzzle.unpack((images, labels))
    assert targets.pretext.tolist() == [i % 10 for i in range(25)]
    assert torch.equal(inputs.views, again.views) and torch.equal(targets.labels, labels)
    assert torch.equal(inputs.views, shuffle_tiles(images, puzzle.perms[targets.pretext], 3))
    torch.manual_seed(0)
    inputs, targets = puzzle.unpack((images, labels))  # training: drawn per image
    assert targets.pretext.tolist() != [i % 10 for i in range(25)]
    assert int(targets.pretext.min()) >= 0 and int(targets.pretext.max()) < 10
    restored = unshuffle_tiles(inputs.views, puzzle.perms[targets.pretext], 3)
    assert torch.equal(restored, images)
    assert puzzle.num_outputs == 10 and len(puzzle.pretext_names()) == 10
    assert task("jigsaw").num_outputs == 24 and task("jigsaw", grid=3).num_outputs == 64
    assert task("jigsaw").pretext_names()[:2] == ["0123", "1032"]


# -- configs and runs ----------------------------------------------------------------------------

RUN = ["trainer.max_epochs=2", "tracking.wandb=disabled", "trainer.num_threads=1",
       "trainer.progress_bar=false"]  # fmt: skip


def run(tmp_path: Path, *overrides: str) -> dict:
    return paralab.run("quickstart_offline", [*RUN, f"output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.grid=3"], r"task\.grid=3: data=digits gives 8x8 images.*Set task\.grid to one of"),
        (["task.grid=5"], r"task\.grid=5: must be an integer in \[2, 4\] \(tiles per side\)"),
        (["task.permutations=30"], r"task\.permutations=30: task\.grid=2 allows at most 24"),
    ],
)
def test_jigsaw_refuses_a_grid_or_permutations_the_images_do_not_allow(
    tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, "task=jigsaw", *overrides)
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def train_losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [float(r["train/loss"]) for r in csv.DictReader(file) if r["train/loss"]]


@pytest.mark.parametrize(
    ("name", "classes", "well_above"), [("rotation", 4, 0.5), ("jigsaw", 24, 0.2)]
)
def test_a_short_run_on_digits_learns_the_pretext(tmp_path, name, classes, well_above):
    summary = run(tmp_path, f"task={name}")
    metrics = summary["metrics"]
    assert summary["status"] == "completed" and summary["headline"] == "test/knn_acc"
    assert 0 <= metrics["test/knn_acc"] <= 1
    assert metrics["test/pretext_acc"] > well_above > 1 / classes  # chance: 1 / classes
    assert metrics["test/loss"] < math.log(classes)  # below the loss of a uniform guess
    first, last = train_losses(Path(summary["run_dir"]))
    assert last < first
    assert (Path(summary["run_dir"]) / "predictions.png").is_file()
