"""U-Net (Ronneberger et al. 2015) on any registered backbone: segmentation_models_pytorch's
decoder over the backbone's ``forward_intermediates``, a 1x1 conv to class logits.

Why smp's ``UnetDecoder`` and not a decoder of our own: it is a widely used, tested U-Net
decoder, and (in smp 0.6) it upsamples each block to the next skip's *size*, not by a fixed 2x,
so odd sizes (30 px: 30, 15, 7) and repeated strides (ResNet's small stem: 1, 1, 2, 4, 8) need
nothing. It expects a first, full-resolution feature it only measures (smp encoders return the
image itself there): we pass the input, so the last decoder block ends at the input resolution.

One adapter is ours: a ViT's stages all share one stride (the patch size), which would leave
the decoder a single upsampling step from the patch grid to the pixels. As in UNETR (Hatamizadeh
et al. 2022), shallower stages of such a run are lifted to finer grids by learned transposed
convolutions (x2, x4, ... up to the stride): with 4 px patches, skips arrive at strides 4, 2, 1.

At most ``len(decoder_channels)`` stages are used, spread evenly from the shallowest to the
deepest (a 12-block ViT with 4 widths: blocks 0, 4, 7, 11); with fewer stages, the last
(narrowest) widths are used.

Cost (3x64x64, 11 classes, forward+backward of batch 32 on the 2-core CPU; command in
:mod:`.dense`): on resnet18 (the default) 12,453,371 parameters (backbone 11,168,832), 3.4-3.6 s;
on cnn (its defaults) 174,555, 0.30 s; on vit (its defaults) 1,439,163, 2.1 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded, limits
from paralab.platform.models.base import Backbone, InputSpec
from paralab.platform.models.dense import DenseConfig, DenseModel, build_backbone, finish
from paralab.platform.models.registry import register_model


@dataclass
class UNetConfig(DenseConfig):
    name: str = "unet"
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet18"})
    # One width per decoder block, deep to shallow (smp's default halved: CPU-sized).
    decoder_channels: list[int] = field(
        default_factory=lambda: [128, 64, 32, 16, 16], metadata=limits(ge=1, min_items=1)
    )
    decoder_batchnorm: bool = True
    attention: str | None = bounded(None, choices=("scse",), hint=" (or null for none)")
    upsampling: str = bounded("nearest", choices=("nearest", "bilinear"))
    center_block: bool = False


def pick_stages(num_stages: int, wanted: int) -> list[int]:
    """``wanted`` stage indices spread evenly over ``0..num_stages-1``, the deepest always
    included (all of them when there are no more than ``wanted``)."""
    if num_stages <= wanted:
        return list(range(num_stages))
    if wanted == 1:
        return [num_stages - 1]
    step = (num_stages - 1) / (wanted - 1)
    return sorted({int(i * step + 0.5) for i in range(wanted)})


def lift_factors(reductions: list[int]) -> list[int]:
    """Per stage (shallow to deep), the upsampling that spreads a run of equal strides: the
    deepest of a run keeps its grid, the next is lifted x2, then x4, ..., never finer than
    the input (a ViT with 4 px patches: [4, 4, 4, 4] -> [4, 4, 2, 1])."""
    factors, run = [1] * len(reductions), 0
    for i in reversed(range(len(reductions))):
        deeper = i + 1 < len(reductions) and reductions[i] == reductions[i + 1]
        run = run + 1 if deeper else 0
        finest = 1 << (max(int(reductions[i]), 1).bit_length() - 1)  # largest power of 2 <= r
        factors[i] = min(1 << run, finest)
    return factors


class UNet(DenseModel):
    """Backbone maps -> (lifts) -> smp ``UnetDecoder`` -> 1x1 conv -> logits at input size."""

    def __init__(self, backbone: Backbone, cfg: UNetConfig, spec: InputSpec) -> None:
        try:  # 2.9 s to import (it pulls timm): only when a U-Net is built
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
        except ImportError as error:
            raise ConfigError(
                f"model=unet needs segmentation-models-pytorch ({error}): "
                "pip install 'segmentation-models-pytorch>=0.6,<0.7', or choose model=fcn"
            ) from None

        super().__init__(backbone)
        info = backbone.feature_info
        self.stages = pick_stages(len(info), len(cfg.decoder_channels))
        channels = [info[i]["num_chs"] for i in self.stages]
        factors = lift_factors([info[i]["reduction"] for i in self.stages])
        self.lifts = nn.ModuleList(
            nn.Identity() if f == 1 else nn.ConvTranspose2d(c, c, f, stride=f)
            for c, f in zip(channels, factors, strict=True)
        )
        widths = list(cfg.decoder_channels[-len(self.stages) :])
        self.decoder = UnetDecoder(
            encoder_channels=[spec.in_channels, *channels],
            decoder_channels=widths,
            n_blocks=len(widths),
            use_norm=cfg.decoder_batchnorm,
            attention_type=cfg.attention,
            add_center_block=cfg.center_block,
            interpolation_mode=cfg.upsampling,
        )
        self.head = nn.Conv2d(widths[-1], spec.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.forward_intermediates(x, self.stages)
        maps = [lift(m) for lift, m in zip(self.lifts, maps, strict=True)]
        logits = self.head(self.decoder([x, *maps]))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


@register_model("unet", config=UNetConfig, task="segmentation")
def unet(cfg: UNetConfig, spec: InputSpec) -> UNet:
    """U-Net: smp's decoder with skips from any backbone's stages (default resnet18)."""
    return finish(UNet(build_backbone(cfg.backbone, spec), cfg, spec), cfg, spec)
