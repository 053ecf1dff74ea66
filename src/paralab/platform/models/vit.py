"""A small Vision Transformer: patch embedding, class token, learned positions, pre-norm blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.models.base import Classifier, InputSpec, ModelConfig
from paralab.platform.models.registry import register_model


@dataclass
class ViTConfig(ModelConfig):
    patch_size: int = 4
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1


class ViTBackbone(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(tokens), -1, -1)
        tokens = torch.cat([cls, tokens], 1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]


@register_model("vit", config=ViTConfig)
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
    return Classifier(ViTBackbone(cfg, spec), cfg.dim, spec.num_classes)


def _largest_divisor(h: int, w: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if h % d == 0 and w % d == 0)
