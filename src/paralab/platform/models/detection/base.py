"""What every detector shares: a registered backbone's multi-scale maps through a feature pyramid,
and one calling convention the detection task relies on.

Why one convention: torchvision's detectors return losses in training mode and detections in
eval mode, never both, so a validation loss (which every paradigm reports and the federated
server aggregates) would need a second model call. A paralab detector is called as
``model(images, targets)`` and returns a :class:`DetectionOutput`:

- training mode: ``losses`` (each term a scalar; ``targets`` required), ``detections`` None;
- eval mode: ``detections`` always, and ``losses`` too when ``targets`` are given (on the same
  features: one backbone pass).

``images`` is a normalised batch (N, C, H, W), all of one size (the in-memory sets give that),
so detectors do not resize (torchvision's default 800 px resize would cost a CPU 150x for a 64 px
canvas). ``targets`` is torchvision's per-image ``{"boxes": (T, 4) xyxy pixels, "labels": (T,)}``
with labels 0..C-1 (the dataset's classes, no background id; a detector that reserves 0 for
background shifts them itself). Detections hold ``boxes``, ``scores`` and ``labels`` alike.

Like the dense models, a detector builds the classification model ``model.backbone`` names and
keeps its :class:`Backbone` as ``backbone`` (so ``model.init_from`` and the probes treat it as
any model); no module is registered twice, so every tensor is in the state dict once and the
federated strategies average each parameter and batch-norm statistic once.

The detectors' cost figures (1x64x64 images, 10 classes, backbone ``{name: cnn, channels:
[16, 32, 64, 128]}`` (pyramid strides 2, 4, 8), defaults otherwise; one training step,
forward+backward+Adam, batch 16 with 3 boxes per image, best of 5 after a warm-up, on the 2-core
CPU shared with other work) come from::

    import time, torch
    from paralab.platform.config import validate_section
    from paralab.platform.models import MODELS, InputSpec
    name, backbone = "faster_rcnn", {"name": "cnn", "channels": [16, 32, 64, 128]}
    entry = MODELS.get(name)
    cfg = validate_section("model", {"name": name, "backbone": backbone}, entry.config)
    model = entry.obj(cfg, InputSpec(1, (64, 64), 10))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    torch.manual_seed(0)
    x, xy = torch.randn(16, 1, 64, 64), torch.rand(16, 3, 2) * 30
    boxes = torch.cat([xy, (xy + 20 + torch.rand(16, 3, 2) * 25).clamp(max=64)], -1)
    targets = [{"boxes": b, "labels": torch.randint(0, 10, (3,))} for b in boxes]
    def step():
        t = time.perf_counter()
        opt.zero_grad(); sum(model(x, targets).losses.values()).backward(); opt.step()
        return time.perf_counter() - t
    step(); print(sum(p.numel() for p in model.parameters()), min(step() for _ in range(5)))
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.models.base import Backbone, HasBackbone, InputSpec, ModelConfig
from paralab.platform.models.dense import SECTION, is_spatial

Targets = list[dict[str, torch.Tensor]]


class DetectionOutput(NamedTuple):
    """What a detector returns (module docstring)."""

    losses: dict[str, torch.Tensor]
    detections: list[dict[str, torch.Tensor]] | None


@dataclass
class DetectorConfig(ModelConfig):
    """Options every detector has. ``backbone``: a classification model's name and options;
    ``feature_levels``: how many of its deepest spatial stages feed the pyramid;
    ``fpn_channels``: the pyramid's width; ``detections_per_image`` and ``score_threshold``:
    what inference keeps."""

    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "cnn"})
    feature_levels: int = bounded(3, ge=1, le=6)
    fpn_channels: int = bounded(64, ge=4)
    detections_per_image: int = bounded(100, ge=1)
    score_threshold: float = bounded(0.05, ge=0, lt=1)


def pyramid_stages(backbone: Backbone, spec: InputSpec, levels: int) -> list[int]:
    """The ``levels`` deepest stages with spatial extent and a stride of 2 or more, shallow to
    deep (a full-resolution level costs a detector 3.6x the step time of strides 2-8 and finds
    nothing the stride-2 level misses: measured with Faster R-CNN and FCOS on 64 px canvases)."""
    spatial = [
        i
        for i, info in enumerate(backbone.feature_info)
        if is_spatial(info, spec) and info["reduction"] >= 2
    ]
    if len(spatial) < levels:
        raise ConfigError(
            f"model.feature_levels={levels}: {SECTION} has {len(spatial)} stage(s) with spatial "
            f"extent and a stride of 2 or more on {spec.image_size[0]}x{spec.image_size[1]} "
            "images. Set "
            f"model.feature_levels={max(1, len(spatial))}, or a backbone with more stages"
        )
    return spatial[-levels:]


class Detector(HasBackbone):
    """A backbone, a feature pyramid over its deepest spatial stages, and a detection head that
    subclasses add (``forward`` as in the module docstring)."""

    def __init__(self, backbone: Backbone, cfg: DetectorConfig, spec: InputSpec) -> None:
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__(backbone)
        self.cfg = cfg
        self.spec = spec
        self.num_classes = spec.num_classes
        self.stages = pyramid_stages(backbone, spec, cfg.feature_levels)
        widths = [backbone.feature_info[i]["num_chs"] for i in self.stages]
        self.fpn = FeaturePyramidNetwork(widths, cfg.fpn_channels)
        self.out_channels = cfg.fpn_channels
        #: each level's stride in pixels, shallow to deep
        self.strides = [backbone.feature_info[i]["reduction"] for i in self.stages]

    def pyramid(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The pyramid's maps ``{"0": finest, ...}``, each ``fpn_channels`` wide."""
        maps = self.backbone.forward_intermediates(images, self.stages)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))

    def forward(self, images: torch.Tensor, targets: Targets | None = None) -> DetectionOutput:
        raise NotImplementedError

    def require_targets(self, targets: Targets | None) -> Targets:
        if targets is None:
            raise ValueError(f"{type(self).__name__} in training mode needs targets")
        return targets


def build_detector(cls: type[Detector], cfg: DetectorConfig, spec: InputSpec) -> Detector:
    """``cls`` on the backbone ``cfg.backbone`` names, with the parameters no loss reaches
    frozen (backbone stages deeper than the pyramid's, a ViT's final norm), found by one
    training-mode pass on a blank image with one box, so DDP never waits for their gradients."""
    from paralab.platform.models.dense import build_backbone

    model = cls(build_backbone(cfg.backbone, spec), cfg, spec)
    h, w = spec.image_size
    box = torch.tensor([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]])
    targets = [{"boxes": box, "labels": torch.zeros(1, dtype=torch.long)}] * 2
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[]):  # the probe pass must not move the run's random stream
        losses = model(torch.zeros(2, spec.in_channels, h, w), targets).losses
    sum(losses.values()).backward()
    for param in model.parameters():
        if param.requires_grad and param.grad is None:
            param.requires_grad_(False)
        param.grad = None
    model.train(was_training)
    _reset_batch_norm_statistics(model)
    return model


def _reset_batch_norm_statistics(model: nn.Module) -> None:
    """Undo what the probe pass did to batch-norm running statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
