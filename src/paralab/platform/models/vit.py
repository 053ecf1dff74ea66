"""A small Vision Transformer: patch embedding, class token, learned positions, pre-norm blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.models.base import (
    Backbone,
    Classifier,
    Indices,
    InputSpec,
    ModelConfig,
    take_indices,
)
from paralab.platform.models.registry import register_model


@dataclass
class ViTConfig(ModelConfig):
    patch_size: int = bounded(4, ge=1)
    dim: int = bounded(128, ge=1)
    depth: int = bounded(4, ge=1)
    heads: int = bounded(4, ge=1)
    mlp_ratio: float = bounded(2.0, gt=0)
    dropout: float = bounded(0.1, ge=0, lt=1)


class ViTBackbone(Backbone):
    """One stage per block, timm's way: its patch tokens (the class token left out) as an NCHW
    map at stride ``patch_size``, the same for every stage. Raw block outputs, without the final
    norm (timm's ``norm=False`` default): that norm belongs to the class-token path, and a dense
    head brings its own."""

    def __init__(self, cfg: ViTConfig, spec: InputSpec) -> None:
        super().__init__()
        h, w = spec.image_size
        p = cfg.patch_size
        self.patch_embed = nn.Conv2d(spec.in_channels, cfg.dim, p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (h // p) * (w // p), cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.num_features = cfg.dim
        self.feature_info = [
            dict(num_chs=cfg.dim, reduction=p, module=f"blocks.layers.{i}")
            for i in range(cfg.depth)
        ]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The class token then the patch tokens, with positions: (N, 1 + h*w, dim)."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(tokens), -1, -1)
        return torch.cat([cls, tokens], 1) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.embed(x)))[:, 0]

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None) -> list[torch.Tensor]:
        take, maps = take_indices(len(self.blocks.layers), indices), []
        h, w = (size // self.patch_embed.stride[0] for size in x.shape[-2:])
        tokens = self.embed(x)
        for i, block in enumerate(self.blocks.layers[: take[-1] + 1]):
            tokens = block(tokens)
            if i in take:
                maps.append(tokens[:, 1:].transpose(1, 2).reshape(len(x), -1, h, w))
        return maps


@register_model("vit", config=ViTConfig, task="classification")
def vit(cfg: ViTConfig, spec: InputSpec) -> Classifier:
    """A small ViT; image size must be divisible by model.patch_size."""
    h, w = spec.image_size
    if h % cfg.patch_size or w % cfg.patch_size:
        raise ConfigError(
            f"model.patch_size={cfg.patch_size} does not divide the image size {h}x{w}; "
            f"choose a divisor, e.g. model.patch_size={_largest_divisor(h, w, cfg.patch_size)}"
        )
    if cfg.dim % cfg.heads:
        raise ConfigError(f"model.dim={cfg.dim} must be divisible by model.heads={cfg.heads}")
    return Classifier(ViTBackbone(cfg, spec), spec.num_classes)


def _largest_divisor(h: int, w: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if h % d == 0 and w % d == 0)
