"""Segmenter (Strudel et al. 2021, "Segmenter: Transformer for Semantic Segmentation") on any
registered backbone: the mask transformer decoder over the backbone's deepest map as tokens.

Why: with a ViT backbone this is the transformer-only segmentation model (no convolution after
the patch embedding), the counterpart to a U-Net when comparing backbones across tasks. The
decoder follows the paper's reference code (github.com/rstrudel/segmenter, ``MaskTransformer``):
the patch tokens, projected to ``decoder_dim``, are joined by one learnable embedding per class;
``decoder_depth`` pre-norm transformer blocks mix them; after a LayerNorm the patch and class
embeddings are projected, L2-normalised, and their dot products are the masks, normalised over
the classes by a LayerNorm ("mask norm"), reshaped to the patch grid and upsampled bilinearly.

The encoder tokens are normalised as in the paper, by the ViT's final norm (``backbone.norm``;
our ViT's stages are raw block outputs); a backbone without one (a conv net) gets a LayerNorm
in the decoder. Unlike the reference, the grid is read from the map, so any input the backbone
accepts works without padding, and for two classes the mask norm keeps only its per-class scale
and bias (see :class:`MaskNorm`). On a conv backbone the deepest spatial map is flattened to
tokens (a ResNet-18 with the small stem on 32 px: a 4x4 grid of 512-d tokens).
``decoder_dim: null`` means the encoder's width, as in the paper.

Cost (3x64x64, 11 classes, forward+backward of batch 32 on the 2-core CPU; command in
:mod:`.dense`): on vit (the default) 1,016,982 parameters (backbone 569,472), 1.25 s; on cnn
541,238, 0.35 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.models.base import Backbone, InputSpec
from paralab.platform.models.dense import (
    DenseConfig,
    DenseModel,
    build_backbone,
    deepest_spatial_stage,
    finish,
)
from paralab.platform.models.registry import register_model


@dataclass
class SegmenterConfig(DenseConfig):
    name: str = "segmenter"
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "vit"})
    decoder_depth: int = bounded(2, ge=1)  # the paper's mask transformer: 2 layers
    decoder_dim: int | None = bounded(None, ge=1)  # null: the encoder's width (the paper's)
    decoder_heads: int = bounded(2, ge=1)  # the paper: width / 64
    mlp_ratio: float = bounded(4.0, gt=0)
    dropout: float = bounded(0.0, ge=0, lt=1)


class MaskNorm(nn.LayerNorm):
    """The paper's mask norm: a LayerNorm over the classes of each pixel's masks. For two
    classes the standardisation is a sign function (two values always become -1 and +1, with
    no gradient back to the masks), so there only the per-class scale and bias apply."""

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        if masks.shape[-1] > 2:
            return super().forward(masks)
        return masks * self.weight + self.bias


class MaskTransformer(nn.Module):
    """Encoder tokens -> class masks on the same grid. ``encoder_norm=False`` when the tokens
    arrive normalised (by the backbone's own final norm)."""

    def __init__(
        self,
        encoder_dim: int,
        num_classes: int,
        *,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
        encoder_norm: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder_norm = nn.LayerNorm(encoder_dim) if encoder_norm else nn.Identity()
        self.proj_dec = nn.Linear(encoder_dim, dim)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        ffn = int(dim * mlp_ratio)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, ffn, dropout, "gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        scale = dim**-0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(scale * torch.randn(dim, dim))
        self.mask_norm = MaskNorm(num_classes)
        for module in self.modules():  # the reference's init_weights
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens (N, h*w, C), row-major on the ``grid`` (h, w) -> masks (N, classes, h, w)."""
        n, (h, w) = len(tokens), grid
        x = torch.cat([self.proj_dec(self.encoder_norm(tokens)), self.cls_emb.expand(n, -1, -1)], 1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        k = self.num_classes
        patches = F.normalize(x[:, :-k] @ self.proj_patch, dim=-1)
        classes = F.normalize(x[:, -k:] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (N, h*w, classes)
        return masks.transpose(1, 2).reshape(n, k, h, w)


class Segmenter(DenseModel):
    """Backbone's deepest spatial map -> mask transformer -> bilinear to input size."""

    def __init__(self, backbone: Backbone, cfg: SegmenterConfig, spec: InputSpec) -> None:
        super().__init__(backbone)
        self.stage = deepest_spatial_stage(backbone, spec)
        width = backbone.feature_info[self.stage]["num_chs"]
        dim = cfg.decoder_dim or width
        if dim % cfg.decoder_heads:
            what = f"model.decoder_dim={dim}" if cfg.decoder_dim else f"the encoder width {dim}"
            raise ConfigError(
                f"model.decoder_heads={cfg.decoder_heads} must divide {what}; set "
                f"model.decoder_heads to a divisor, e.g. {_divisor(dim, cfg.decoder_heads)}, "
                "or model.decoder_dim to a multiple of it"
            )
        # The paper's encoder ends in its final norm; a ViT keeps it (timm's name, ``norm``)
        # for its class token, and the deepest stage's tokens take it here too.
        norm = getattr(backbone, "norm", None)
        self.backbone_norm = (
            isinstance(norm, nn.LayerNorm)
            and tuple(norm.normalized_shape) == (width,)
            and self.stage == len(backbone.feature_info) - 1
        )
        self.decoder = MaskTransformer(
            width, spec.num_classes, dim=dim, depth=cfg.decoder_depth, heads=cfg.decoder_heads,
            mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout, encoder_norm=not self.backbone_norm,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (fmap,) = self.backbone.forward_intermediates(x, [self.stage])
        tokens = fmap.flatten(2).transpose(1, 2)
        if self.backbone_norm:
            tokens = self.backbone.norm(tokens)
        masks = self.decoder(tokens, fmap.shape[-2:])
        return F.interpolate(masks, x.shape[-2:], mode="bilinear", align_corners=False)


def _divisor(dim: int, near: int) -> int:
    return max(d for d in range(1, near + 1) if dim % d == 0)


@register_model("segmenter", config=SegmenterConfig, task="segmentation")
def segmenter(cfg: SegmenterConfig, spec: InputSpec) -> Segmenter:
    """Segmenter: a mask transformer decoder on ViT (or any backbone's) tokens."""
    return finish(Segmenter(build_backbone(cfg.backbone, spec), cfg, spec), cfg, spec)
