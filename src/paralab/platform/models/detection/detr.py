"""DETR (Carion et al. 2020, "End-to-End Object Detection with Transformers") on any registered
backbone: a transformer turns one feature map into a fixed set of (class, box) predictions.

Why: it is the set-prediction counterpart to the anchor-based detectors. ``num_queries``
learned object queries each decode one slot of the set; training pairs slots with objects by
Hungarian matching (:mod:`.matcher`), so one object gets one slot, the rest learn "no object",
and inference needs neither anchors nor NMS: softmax over the ``C + 1`` classes, drop "no
object", score each slot by its best class, keep the ``detections_per_image`` best above
``score_threshold``.

How: the pyramid level ``level`` (default the coarsest; with the default ``feature_levels: 1``
the backbone's deepest spatial map, DETR's C5, through one FPN block) -> 1x1 projection to
``hidden_dim`` -> plus a 2D sine positional encoding (:func:`sine_positions`, DETR's
``PositionEmbeddingSine`` with ``normalize=True``) -> ``nn.TransformerEncoder``
(``encoder_layers``, may be 0) -> ``nn.TransformerDecoder`` (``decoder_layers``) -> a linear
class head and a 3-layer MLP box head (sigmoid: normalised cxcywh) on every decoder layer's
output, the intermediate ones through the decoder's final norm for DETR's auxiliary losses
(``aux_loss``). Positions enter once, as inputs, not at every layer as in DETR: the encoder's
input is features + positions, and the decoder's input ``tgt`` is the learned queries themselves
(DETR starts from zeros and adds the query embedding to each layer's queries and keys). That
keeps torch's stock layers; the residual stream carries the positions on. The layers are
pre-norm (``norm_first``, DETR's ``pre_norm`` option), which trains more steadily from scratch
on small runs than DETR's default post-norm; their weights are Xavier-initialised, as DETR's.

Convergence: DETR is slow to converge (the paper trains COCO for 500 epochs; the matching makes
every query's target move while the queries specialise). On small CPU runs expect the loss to
fall for many epochs before mAP rises, and a short run to score below the anchor detectors; the
defaults are small (hidden 64, 2 heads, 2+2 layers, 10 queries) so that many epochs are cheap.

Cost (measured with the command in :mod:`.base`, ``name = "detr"``): 324,351 parameters
(backbone 97,392), 0.04 s per training step (0.040-0.044 s over two runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.models.base import Backbone, InputSpec
from paralab.platform.models.detection.base import (
    DetectionOutput,
    Detector,
    DetectorConfig,
    Targets,
    build_detector,
)
from paralab.platform.models.detection.matcher import LossWeights, SetCriterion, normalise_targets
from paralab.platform.models.registry import register_model


@dataclass
class DETRConfig(DetectorConfig):
    name: str = "detr"
    feature_levels: int = bounded(1, ge=1, le=6)  # DETR reads one map: the deepest
    level: int = bounded(-1, ge=-6, le=5)  # the pyramid level the transformer reads; -1 coarsest
    hidden_dim: int = bounded(64, ge=4)  # the paper: 256
    heads: int = bounded(2, ge=1)  # the paper: 8
    encoder_layers: int = bounded(2, ge=0)  # the paper: 6
    decoder_layers: int = bounded(2, ge=1)  # the paper: 6
    ffn_dim: int = bounded(128, ge=1)  # the paper: 2048
    dropout: float = bounded(0.0, ge=0, lt=1)  # the paper: 0.1
    num_queries: int = bounded(10, ge=1)  # the most objects an image can hold; the paper: 100
    aux_loss: bool = True  # the set loss on every decoder layer, not only the last
    eos_coef: float = bounded(0.1, ge=0, le=1)  # the "no object" class's weight in the CE
    class_weight: float = bounded(1.0, ge=0)  # cross-entropy, in the matching cost and the loss
    l1_weight: float = bounded(5.0, ge=0)  # L1 on normalised cxcywh boxes
    giou_weight: float = bounded(2.0, ge=0)  # generalised IoU


def sine_positions(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2D sine encoding of an ``h x w`` grid, row-major: (h*w, dim), the first
    half encoding y, the second x, each as interleaved sin/cos at ``dim / 4`` frequencies."""
    half = dim // 2
    freqs = temperature ** (2 * (torch.arange(half) // 2) / half)

    def encode(n: int) -> torch.Tensor:
        pos = (torch.arange(n) + 0.5) / n * 2 * math.pi / freqs[:, None]  # (half, n)
        return torch.stack([pos[0::2].sin(), pos[1::2].cos()], 1).flatten(0, 1).T  # (n, half)

    y, x = encode(h)[:, None].expand(h, w, half), encode(w)[None].expand(h, w, half)
    return torch.cat([y, x], -1).flatten(0, 1)


class DETR(Detector):
    """A pyramid level -> transformer encoder-decoder -> one (class, box) per query."""

    def __init__(self, backbone: Backbone, cfg: DETRConfig, spec: InputSpec) -> None:
        super().__init__(backbone, cfg, spec)
        d, levels, step = cfg.hidden_dim, cfg.feature_levels, math.lcm(4, cfg.heads)
        if d % step:
            raise ConfigError(
                f"model.hidden_dim={d}: must be a multiple of 4 (the sine encoding) and of "
                f"model.heads={cfg.heads}. Set model.hidden_dim={-(-d // step) * step}"
            )
        if not -levels <= cfg.level < levels:
            raise ConfigError(
                f"model.level={cfg.level}: the pyramid has model.feature_levels={levels} levels "
                f"(0 finest .. {levels - 1}, or -1 the coarsest). Set model.level=-1"
            )
        self.level = str(cfg.level % levels)
        self.aux_loss = cfg.aux_loss
        self.input_proj = nn.Conv2d(self.out_channels, d, 1)
        kwargs = dict(dropout=cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, cfg.heads, cfg.ffn_dim, **kwargs),
                cfg.encoder_layers,
                norm=nn.LayerNorm(d),
                enable_nested_tensor=False,
            )
            if cfg.encoder_layers
            else None
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, cfg.heads, cfg.ffn_dim, **kwargs),
            cfg.decoder_layers,
            norm=nn.LayerNorm(d),
        )
        for module in (self.encoder, self.decoder):
            for p in module.parameters() if module is not None else ():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.query = nn.Embedding(cfg.num_queries, d)
        self.class_head = nn.Linear(d, self.num_classes + 1)
        self.box_head = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4)
        )
        weights = LossWeights(cfg.class_weight, cfg.l1_weight, cfg.giou_weight)
        self.criterion = SetCriterion(self.num_classes, weights, cfg.eos_coef)

    def predict(
        self, images: torch.Tensor, every_layer: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (L, N, Q, C+1) and normalised cxcywh boxes (L, N, Q, 4) of every decoder
        layer (``every_layer``) or of the last (L = 1)."""
        fmap = self.input_proj(self.pyramid(images)[self.level])
        n, d, h, w = fmap.shape
        pos = sine_positions(h, w, d).to(fmap)
        memory = fmap.flatten(2).transpose(1, 2) + pos
        if self.encoder is not None:
            memory = self.encoder(memory)
        x = self.query.weight.expand(n, -1, -1)
        outputs = []
        for layer in self.decoder.layers:
            x = layer(x, memory)
            outputs.append(x)
        if not every_layer:
            outputs = outputs[-1:]
        hs = self.decoder.norm(torch.stack(outputs))
        return self.class_head(hs), self.box_head(hs).sigmoid()

    def forward(self, images: torch.Tensor, targets: Targets | None = None) -> DetectionOutput:
        if self.training:
            targets = self.require_targets(targets)
        logits, boxes = self.predict(images, self.aux_loss and targets is not None)
        size = tuple(images.shape[-2:])
        losses: dict[str, torch.Tensor] = {}
        if targets is not None:
            norm = normalise_targets(targets, size)
            losses = self.criterion(logits[-1], boxes[-1], norm)
            for i in range(len(logits) - 1):
                aux = self.criterion(logits[i], boxes[i], norm)
                losses |= {f"{k}_{i}": v for k, v in aux.items()}
        detections = None if self.training else self.postprocess(logits[-1], boxes[-1], size)
        return DetectionOutput(losses, detections)

    @torch.no_grad()
    def postprocess(
        self, logits: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: the best ``detections_per_image`` queries whose best real class scores
        above ``score_threshold``, boxes in xyxy pixels clipped to the image; no NMS."""
        from torchvision.ops import box_convert

        h, w = size
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        xyxy = box_convert(boxes, "cxcywh", "xyxy") * boxes.new_tensor([w, h, w, h])
        xyxy = torch.minimum(xyxy.clamp_min(0), xyxy.new_tensor([w, h, w, h]))
        out = []
        for s, c, b in zip(scores, labels, xyxy, strict=True):
            keep = (s > self.cfg.score_threshold).nonzero().flatten()
            keep = keep[s[keep].argsort(descending=True)[: self.cfg.detections_per_image]]
            out.append({"boxes": b[keep], "scores": s[keep], "labels": c[keep]})
        return out


@register_model("detr", config=DETRConfig, task="detection")
def detr(cfg: DETRConfig, spec: InputSpec) -> DETR:
    """DETR: a transformer's set of (class, box) predictions, matched to objects; no NMS."""
    return build_detector(DETR, cfg, spec)
