"""Colorization (Zhang et al. 2016): from the lightness of a photo, predict its colours per pixel.

Why it is here: to colour a grey photo the backbone has to recognise what it sees (grass is
green, sky is blue), which is the representation a pretext task is after, and it is the dense
pretext task: it trains the segmentation models (``unet``, ``fcn``, ``segmenter``) whose
backbone then moves to classification or segmentation runs.

Input: the L channel of CIE Lab (kornia's conversion of the de-normalised sRGB image), turned
back into the neutral sRGB grey of that lightness (a = b = 0, so its three channels are equal)
and normalised with the dataset's own mean and std. The model is thus built for, and sees,
images with the data's 3 channels: a backbone trained here has the input layer an RGB run
expects, and what it saw differs from a colour photo only in saturation, so its weights
transfer to colour runs (a 1-channel backbone would not load into them).

Targets: the ab plane is cut into square bins of ``BIN_SIZE`` (10) centred on multiples of 10
in [-110, 110]; only the bins sRGB colours reach are kept (:func:`ab_bins`: every colour of a
64-level sRGB grid converted to Lab and rounded to its bin, which gives 261 bins; Zhang et al.
keep 313). Each pixel's target is its nearest bin, a hard assignment (Zhang et al. spread it
softly over the 5 nearest bins); the loss is per-pixel cross-entropy over the bins. A rare
colour whose own cell was not kept goes to the kept bin nearest that cell's centre.

Rebalancing (``rebalance``, off by default): as Zhang et al., each pixel's loss is weighted by
its target bin's ``w ~ 1 / ((1 - mix) p + mix / Q)`` (``mix = rebalance_mix``), where ``p`` is
the training set's bin distribution smoothed by a Gaussian of ``sigma = 5`` over the ab plane
(counted on at most :data:`REBALANCE_IMAGES` images in :meth:`Colorization.bind`), scaled so
the expected weight is 1: rare, saturated colours are not drowned by the greys.

Decoding (pictures): the annealed mean of Zhang et al. (softmax of the logits at temperature
``temperature``, 0.38; 0 gives the most likely bin), its ab put with the input's L and
converted to sRGB.

Metrics: the k-NN monitor (headline ``knn_acc``) on the pooled backbone features of the *grey*
images, as those are what the backbone learns from, and ``bin_acc``, the per-pixel top-1
accuracy over the bins. On grey datasets the task cannot make targets, and :meth:`check` says so.

Cost: the head predicts 261 classes at every pixel (at full resolution; Zhang et al. predict at
a quarter and upsample), which dominates a small model: a U-Net on cnn [16, 32, 64] takes about
4.5x as long per step as the same U-Net with 11 classes (0.6 s against 0.15 s for 64 32x32
images, one thread of the 2-core CPU with the other core busy).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.tasks.base import Batch, TaskConfig, register_task
from paralab.platform.tasks.pretext.base import (
    PretextInputs,
    PretextOutput,
    PretextTargets,
    PretextTask,
)

#: Side of an ab bin, and the largest |a| or |b| a bin centre may have.
BIN_SIZE = 10.0
AB_LIMIT = 110.0
_CELLS = int(2 * AB_LIMIT / BIN_SIZE) + 1  # bin centres per axis: -110, -100, ..., 110
#: Levels per channel of the sRGB grid that decides which bins are in gamut.
GAMUT_LEVELS = 64
#: Training images counted for the rebalancing weights (at most).
REBALANCE_IMAGES = 1000


@dataclass
class ColorizationConfig(TaskConfig):
    name: str = "colorization"
    temperature: float = bounded(0.38, ge=0, le=10)  # decoding: annealed mean (0: the mode)
    rebalance: bool = False
    # with rebalance: the uniform distribution's share in the mix (1: no reweighting)
    rebalance_mix: float = bounded(0.5, gt=0, le=1)


# -- the bins: pure functions --------------------------------------------------------------------


@lru_cache(maxsize=1)
def _gamut() -> tuple[torch.Tensor, torch.Tensor]:
    """The kept bin centres (Q, 2) and, for each cell of the full grid, its kept bin (cells,)."""
    from kornia.color import rgb_to_lab

    levels = torch.linspace(0, 1, GAMUT_LEVELS)
    grid = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)
    ab = rgb_to_lab(grid)[1:].reshape(2, -1).T
    kept = torch.unique(_cell(ab))  # sorted cell indices
    centres = torch.stack([kept // _CELLS, kept % _CELLS], 1).float() * BIN_SIZE - AB_LIMIT
    every = torch.arange(_CELLS * _CELLS)
    every_centre = torch.stack([every // _CELLS, every % _CELLS], 1).float() * BIN_SIZE - AB_LIMIT
    lookup = torch.cdist(every_centre, centres).argmin(1)  # a kept cell is its own nearest
    return centres, lookup


def _cell(ab: torch.Tensor) -> torch.Tensor:
    """The grid cell of each ab value (..., 2): row-major index over the full 23x23 grid."""
    index = ((ab.clamp(-AB_LIMIT, AB_LIMIT) + AB_LIMIT) / BIN_SIZE).round().long()
    return index[..., 0] * _CELLS + index[..., 1]


def ab_bins() -> torch.Tensor:
    """The in-gamut bin centres (Q, 2), in (a, b) units; bin ``q`` is row ``q``."""
    return _gamut()[0].clone()


def encode_ab(ab: torch.Tensor) -> torch.Tensor:
    """The bin index of each ab value (..., 2): the nearest kept bin (hard assignment)."""
    lookup = _gamut()[1].to(ab.device)
    return lookup[_cell(ab)]


def decode_bins(index: torch.Tensor) -> torch.Tensor:
    """The ab centre (..., 2) of each bin index (...)."""
    return _gamut()[0].to(index.device)[index]


def decode_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """ab maps (N, 2, H, W) from bin logits (N, Q, H, W): the annealed mean (softmax of
    ``logits / temperature`` over the bins, then the expected centre), or the most likely
    bin's centre when ``temperature`` is 0."""
    centres = _gamut()[0].to(logits.device, logits.dtype)
    if temperature == 0:
        return decode_bins(logits.argmax(1)).movedim(-1, 1).to(logits.dtype)
    weights = (logits / temperature).softmax(1)
    return torch.einsum("nqhw,qc->nchw", weights, centres)


def bin_counts(images: torch.Tensor, num_bins: int, chunk: int = 100) -> torch.Tensor:
    """How many pixels of uint8 sRGB ``images`` (N, 3, H, W) fall in each bin (a chunk of
    images converted at a time)."""
    counts = torch.zeros(num_bins, dtype=torch.long)
    for start in range(0, len(images), chunk):
        pixels = images[start : start + chunk].float() / 255.0
        bins = encode_ab(lab_of(pixels)[:, 1:].movedim(1, -1))
        counts += torch.bincount(bins.flatten(), minlength=num_bins)
    return counts


def bin_weights(counts: torch.Tensor, mix: float, sigma: float = 5.0) -> torch.Tensor:
    """Zhang et al.'s rebalancing weights (Q,) from bin counts (Q,): the distribution smoothed
    by a Gaussian of ``sigma`` over the ab plane, mixed with the uniform one (``mix`` of it),
    inverted, and scaled so its expectation under the smoothed distribution is 1."""
    centres = _gamut()[0]
    p = counts.double() / counts.sum().clamp_min(1)
    kernel = (-torch.cdist(centres, centres).double().square() / (2 * sigma**2)).exp()
    smoothed = kernel @ p
    smoothed = smoothed / smoothed.sum()
    weights = 1.0 / ((1 - mix) * smoothed + mix / len(centres))
    return (weights / (smoothed * weights).sum()).float()


# -- Lab <-> the model's images ------------------------------------------------------------------


def lab_of(pixels: torch.Tensor) -> torch.Tensor:
    """Lab (N, 3, H, W) of sRGB images in [0, 1]."""
    from kornia.color import rgb_to_lab

    return rgb_to_lab(pixels.clamp(0, 1))


def grey_of(lightness: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """The neutral sRGB grey (N, channels, H, W) in [0, 1] of lightness L (N, 1, H, W)."""
    from kornia.color import lab_to_rgb

    zeros = torch.zeros_like(lightness)
    grey = lab_to_rgb(torch.cat([lightness, zeros, zeros], 1), clip=True)[:, :1]
    return grey.expand(-1, channels, -1, -1)


def rgb_of(lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """sRGB images (N, 3, H, W) in [0, 1] from L (N, 1, H, W) and ab (N, 2, H, W)."""
    from kornia.color import lab_to_rgb

    return lab_to_rgb(torch.cat([lightness, ab], 1), clip=True)


# -- the task ------------------------------------------------------------------------------------


@register_task("colorization", config=ColorizationConfig)
class Colorization(PretextTask):
    """Colorization: per-pixel ab-bin classification from the grey image (a dense model);
    k-NN monitor on the grey images and per-pixel bin accuracy."""

    model_kind = "segmentation"

    def __init__(self, cfg: ColorizationConfig, classes: list[str], label_smoothing: float = 0.0):
        super().__init__(cfg, classes, label_smoothing)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None

    @property
    def train_score(self) -> str:
        return "bin_acc"

    @property
    def num_outputs(self) -> int:
        return len(_gamut()[0])

    def bind(self, data: Any) -> None:
        """Keep the normalisation (to recover the colours) and, with ``rebalance``, count the
        training set's bins. Grey data is left for :meth:`check` to refuse."""
        self.mean, self.std = data.train.mean.clone(), data.train.std.clone()
        if self.cfg.rebalance and data.in_channels == 3:
            counts = bin_counts(data.train.images[:REBALANCE_IMAGES], self.num_outputs)
            self.weights = bin_weights(counts, self.cfg.rebalance_mix)

    def check(self, config: Any, data: Any) -> None:
        """Colour data first (the grey of a grey image has no colours to predict), then the
        dataset and model kinds every task checks."""
        if data.in_channels != 3:
            problem = "is greyscale" if data.in_channels == 1 else (
                f"has {data.in_channels} channels, not 3 (RGB)")  # fmt: skip
            raise ConfigError(
                f"task=colorization needs colour images; data={config.data.name} {problem}. "
                "Choose an RGB dataset (data=photos, data=cifar10) or another pretext task "
                "(task=rotation, task=jigsaw, task=simclr)"
            )
        super().check(config, data)

    # -- one batch -------------------------------------------------------------------------------

    def _normalisation(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("Colorization.bind(data) must be called before batches are made")
        view = (1, -1, 1, 1)
        return self.mean.view(view).to(images), self.std.view(view).to(images)

    def make(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised grey images and each pixel's ab bin (N, H, W)."""
        mean, std = self._normalisation(images)
        lab = lab_of(images * std + mean)
        grey = grey_of(lab[:, :1], images.shape[1])
        return (grey - mean) / std, encode_ab(lab[:, 1:].movedim(1, -1))

    def unpack(self, batch: Batch) -> tuple[PretextInputs, PretextTargets]:
        """The grey images are both the pretext's views and the monitor's plain images."""
        images, labels = batch[0], batch[1]
        grey, bins = self.make(images)
        return PretextInputs(grey, grey), PretextTargets(bins, labels)

    def forward(self, model: nn.Module, inputs: PretextInputs) -> PretextOutput:
        """Per-pixel bin logits (N, Q, H, W) and, in eval mode, the monitor's features."""
        return PretextOutput(model(inputs.views), self.monitor_features(model, inputs))

    def loss(self, outputs: PretextOutput, targets: PretextTargets) -> torch.Tensor:
        """Per-pixel cross-entropy over the bins (weighted by the target bin when rebalanced)."""
        if self.weights is None:
            return nn.functional.cross_entropy(outputs.logits, targets.pretext)
        losses = nn.functional.cross_entropy(outputs.logits, targets.pretext, reduction="none")
        weights = self.weights.to(losses.device)[targets.pretext]
        return (losses * weights).mean()

    # -- judging ---------------------------------------------------------------------------------

    def draw(self, model: nn.Module, batch: Batch, path: Path) -> None:
        """Rows: the grey input, the true colours, the predicted colours."""
        images = batch[0]
        mean, std = self._normalisation(images)
        lab = lab_of(images * std + mean)
        inputs, _ = self.unpack(batch)
        with torch.no_grad():
            logits = self.forward(model, inputs).logits
        predicted = rgb_of(lab[:, :1], decode_logits(logits.float(), self.cfg.temperature))
        grey = grey_of(lab[:, :1])
        draw_rows([grey, (images * std + mean).clamp(0, 1), predicted], path)


def draw_rows(rows: list[torch.Tensor], path: Path) -> None:
    """sRGB images in [0, 1], one row per list entry: grey input, true and predicted colour."""
    from paralab.platform.tasks.pictures import MAX_IMAGES, figure, save_figure

    n = min(MAX_IMAGES, len(rows[0]))
    plt, fig, axes = figure(len(rows), n)
    for row, images in enumerate(rows):
        for i in range(n):
            pixels = images[i].detach().float().cpu().clamp(0, 1)
            axes[row, i].imshow(pixels.permute(1, 2, 0).numpy())
    for row, label in enumerate(("grey input", "true colour", "predicted")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    save_figure(plt, fig, path)
