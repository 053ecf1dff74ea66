"""Random flips and padded crops of whole batches, drawn per image; masks get the same draws."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = 255  # mask value of void pixels (unlabelled, or padded in by a crop): no loss
CROP_PAD = 4


def augment_batch(x: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
    """Random horizontal flip and 4-pixel padded crop, drawn per image from torch's global RNG."""
    n = x.shape[0]
    if "hflip" in ops:
        flip = torch.rand(n) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if "crop" in ops:
        x = random_crop(x, pad=CROP_PAD)
    return x


def augment_with_masks(
    x: torch.Tensor, masks: torch.Tensor, ops: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment_batch` for images (N, C, H, W) and their masks (N, H, W): each random draw
    is made once and applied to both; pixels a crop pads in are :data:`IGNORE_INDEX` in masks."""
    n = x.shape[0]
    if "hflip" in ops:
        flip = torch.rand(n) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        masks = torch.where(flip.view(-1, 1, 1), masks.flip(-1), masks)
    if "crop" in ops:
        offsets = torch.randint(0, 2 * CROP_PAD + 1, (2, n))
        x = crop_at(x, CROP_PAD, offsets)
        masks = crop_at(masks.unsqueeze(1), CROP_PAD, offsets, fill=IGNORE_INDEX).squeeze(1)
    return x, masks


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad by ``pad`` pixels and crop back to the input size at a random offset per image."""
    return crop_at(x, pad, torch.randint(0, 2 * pad + 1, (2, x.shape[0])))


def crop_at(x: torch.Tensor, pad: int, offsets: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Pad by ``pad`` pixels of ``fill`` and crop back to the input size at ``offsets`` (2, N):
    row and column offsets into the padded image, each in [0, 2 * pad]."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=fill)
    dy, dx = offsets
    rows = (dy.view(-1, 1) + torch.arange(h)).view(n, 1, h, 1)
    cols = (dx.view(-1, 1) + torch.arange(w)).view(n, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]
