"""Jigsaw puzzles (Noroozi & Favaro 2016): which permutation shuffled an image's tiles.

Each image is cut into ``grid x grid`` tiles, the tiles are put in the order of one of a fixed
set of permutations, and the network names the permutation. Putting parts back in place needs
what they are and how objects are assembled, which transfers to recognising them.

The shuffled tiles are reassembled into one image of the original size, rather than fed as
separate tiles to a siamese network as in the paper: every registered backbone (the cnn,
resnet18, a vit built for a fixed input size) then takes the puzzle unchanged, and the image
side must only be divisible by ``grid``.

The permutation set is fixed for a ``(grid, permutations)`` pair, so a checkpoint's head means
the same thing in every process and every later run: for ``grid=2`` it holds the identity and
then greedily the permutation farthest (in Hamming distance) from those already chosen, among
all 24; for larger grids the candidates are the identity and a seeded pool of :data:`POOL`
random permutations (searching all ``9!`` would cost far more for little gain). The paper's
greedy choice maximises the mean distance; this one maximises the smallest (64 permutations of
9 tiles differ pairwise in at least 7 positions), so no two classes are near-twins and the task
cannot be solved by locating one or two tiles.

Training draws a random permutation per image (torch's generator on the batch's device, seeded
with the run); evaluation (gradients off: Lightning's validation and test, and
:func:`~paralab.platform.tasks.evaluate.evaluate`) gives image ``i`` of a batch permutation
``i % permutations``, so validation metrics repeat exactly.

Shortcut risk: tiles that touch keep continuous edges, lines and chromatic aberration across
their borders, so a network can solve the puzzle by matching low-level borders instead of
learning what the parts are. The paper leaves random gaps between tiles and jitters their
colour; this module does neither, so read its pretext accuracy with that in mind and trust the
k-NN monitor (the headline) for feature quality.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.tasks.base import TaskConfig, register_task
from paralab.platform.tasks.pretext.base import PretextTask

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData

#: Candidate permutations the greedy choice looks at when ``(grid * grid)!`` is larger.
POOL = 20_000
#: The most permutation classes (the paper's largest set).
MOST = 1000
#: Seed of the candidate pool: part of what the permutation classes mean, never change it.
SEED = 2016
#: ``permutations`` when the config leaves it out, per grid: all 24 for grid 2, 64 above.
DEFAULT_PERMUTATIONS = {2: 24, 3: 64, 4: 64}


@dataclass
class JigsawConfig(TaskConfig):
    name: str = "jigsaw"
    grid: int = bounded(2, ge=2, le=4, hint=" (tiles per side)")
    permutations: int | None = bounded(None, ge=2, le=MOST)


def permutation_set(grid: int, n: int) -> torch.Tensor:
    """The fixed ``n`` permutations of ``grid * grid`` tiles (n, grid * grid), the identity
    first, each next one the candidate whose smallest Hamming distance to those chosen is
    largest (the first such candidate on ties)."""
    return _permutation_set(grid, n).clone()


@lru_cache(maxsize=16)
def _permutation_set(grid: int, n: int) -> torch.Tensor:
    tiles = grid * grid
    if n > max_permutations(grid):
        raise ValueError(f"{n} permutations of {tiles} tiles: at most {max_permutations(grid)}")
    pool = _candidates(tiles)
    rows = pool.numpy()  # numpy: torch's threads on 20,000 x 16 entries cost more than they give
    chosen = [0]  # the identity
    nearest = (rows != rows[0]).sum(1)  # each candidate's distance to the closest one chosen
    for _ in range(n - 1):
        pick = int(nearest.argmax())  # the first of the farthest
        chosen.append(pick)
        nearest = np.minimum(nearest, (rows != rows[pick]).sum(1))
    return pool[chosen]


def _candidates(tiles: int) -> torch.Tensor:
    """All permutations of ``tiles`` when there are at most :data:`POOL`, else the identity and
    seeded random ones, repeats dropped, in a fixed order."""
    if math.factorial(tiles) <= POOL:
        return torch.tensor(list(itertools.permutations(range(tiles))))
    generator = torch.Generator().manual_seed(SEED)
    drawn = torch.rand(POOL, tiles, generator=generator).argsort(1)
    pool = torch.cat([torch.arange(tiles)[None], drawn])
    _, inverse = torch.unique(pool, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(pool), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(pool)), reduce="amin")
    return pool[first.sort().values]


def max_permutations(grid: int) -> int:
    """The most permutation classes ``grid`` allows: all of them for grid 2, else :data:`MOST`."""
    return min(math.factorial(grid * grid), MOST)


def min_hamming(perms: torch.Tensor) -> int:
    """The smallest Hamming distance between two different permutations of ``perms``."""
    distances = (perms[:, None, :] != perms[None, :, :]).sum(2)
    distances.fill_diagonal_(perms.shape[1] + 1)
    return int(distances.min())


def shuffle_tiles(images: torch.Tensor, perms: torch.Tensor, grid: int) -> torch.Tensor:
    """``images`` (N, C, H, W) with tile ``perms[i, j]`` of image ``i`` moved to position ``j``
    (tiles numbered row by row), reassembled at the same size; H and W divisible by ``grid``."""
    n, c, h, w = images.shape
    th, tw = h // grid, w // grid
    tiles = images.reshape(n, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n, grid * grid, c, th, tw)
    moved = tiles[torch.arange(n, device=images.device)[:, None], perms]
    moved = moved.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return moved.reshape(n, c, h, w)


def unshuffle_tiles(images: torch.Tensor, perms: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`shuffle_tiles`: the tiles put back where ``perms`` took them from."""
    return shuffle_tiles(images, perms.argsort(1), grid)


@register_task("jigsaw", config=JigsawConfig)
class Jigsaw(PretextTask):
    """Self-supervised: name the fixed permutation that shuffled an image's grid x grid tiles;
    k-NN accuracy of the features (test/knn_acc) as the headline."""

    @property
    def grid(self) -> int:
        return self.cfg.grid

    @property
    def num_outputs(self) -> int:
        return self.cfg.permutations or DEFAULT_PERMUTATIONS[self.grid]

    @property
    def perms(self) -> torch.Tensor:
        """The permutation classes (num_outputs, grid * grid): row ``k`` is class ``k``."""
        return permutation_set(self.grid, self.num_outputs)

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:
        super().check(config, data)
        most = max_permutations(self.grid)
        if self.num_outputs > most:
            raise ConfigError(
                f"task.permutations={self.num_outputs}: task.grid={self.grid} allows at most "
                f"{most} permutations. Set task.permutations={min(most, 64)} or a larger task.grid"
            )
        height, width = data.image_size
        if height % self.grid or width % self.grid:
            fits = [g for g in range(2, 5) if height % g == 0 and width % g == 0]
            raise ConfigError(
                f"task.grid={self.grid}: data={config.data.name} gives {height}x{width} images, "
                f"which do not cut into {self.grid}x{self.grid} equal tiles. Set task.grid to one "
                f"of {fits or 'none'} or resize the images to a multiple of {self.grid}"
            )

    def make(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(images)
        if torch.is_grad_enabled():  # training: a fresh puzzle per image
            chosen = torch.randint(self.num_outputs, (n,), device=images.device)
        else:  # evaluation: the same puzzles every time
            chosen = torch.arange(n, device=images.device) % self.num_outputs
        perms = self.perms.to(images.device)[chosen]
        return shuffle_tiles(images, perms, self.grid), chosen

    def pretext_names(self) -> list[str]:
        """Each permutation as its tile order (``"1032"``: tile 1 first), for grids up to 3."""
        if self.grid > 3:
            return super().pretext_names()
        return ["".join(str(int(t)) for t in row) for row in self.perms]
