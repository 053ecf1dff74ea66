"""What the dense (per-pixel) models share: a classification backbone named in ``model.backbone``,
checked and built through the model registry, and the surface that lets it move between tasks.

Why a dense model does not build its own encoder: a backbone trained by one paradigm (a
classifier under continual or federated learning) should carry over to segmentation, and a
segmentation backbone back. So ``unet``, ``fcn`` and ``segmenter`` build the registered
classification model named in ``model.backbone`` (validated like any model section: a wrong key
is ``model.backbone.<key>``), keep its :class:`Backbone` under the same submodule name as
:class:`Classifier` (``backbone``), and drop its linear head. ``backbone.*`` keys of any paralab
checkpoint then load with :func:`paralab.platform.models.transfer.load_backbone`, as
``model.init_from`` does for every model.

A backbone serves a dense head when ``forward_intermediates`` gives at least one map with
spatial extent: a stage whose ``reduction`` is below the image size. The ``mlp``'s stages are
flat vectors (``reduction`` = image size), so it is refused; ``fedavg_cnn``'s last stage is flat
too, but its conv stages carry the dense head (a U-Net broadcasts the flat vector as context).

The figures in ``unet``, ``fcn`` and ``segmenter`` (parameters; one forward+backward of a batch
of 32 3x64x64 images, 11 classes as in the canvas sets, best of 3 after a warm-up, on the 2-core
CPU with nothing else running) come from::

    import time, torch
    from paralab.platform.config import validate_section
    from paralab.platform.models import MODELS, InputSpec
    name, backbone = "unet", {"name": "resnet18"}
    entry = MODELS.get(name)
    cfg = validate_section("model", {"name": name, "backbone": backbone}, entry.config)
    model = entry.obj(cfg, InputSpec(3, (64, 64), 11))
    x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 11, (32, 64, 64))
    def step():
        t = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return time.perf_counter() - t
    step(); print(sum(p.numel() for p in model.parameters()), min(step() for _ in range(3)))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from paralab.errors import ConfigError, ParalabError
from paralab.platform.models.base import Backbone, HasBackbone, InputSpec, ModelConfig
from paralab.platform.models.registry import MODELS

SECTION = "model.backbone"
#: A typical image, on which :func:`dense_backbones` judges each model with its defaults.
_PROBE_SIZE = (32, 32)
M = TypeVar("M", bound="DenseModel")


@dataclass
class DenseConfig(ModelConfig):
    """Options every dense model has. ``backbone`` names a registered classification model and
    its options (``{name: cnn, channels: [32, 64, 128]}``); its trained weights come from
    ``model.init_from``, as for every model."""

    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet18"})


class DenseModel(HasBackbone):
    """A backbone whose maps feed a per-pixel head; ``forward`` gives ``(N, classes, H, W)``.

    Exposes the backbone as a :class:`Classifier` does (``backbone``, ``num_features``,
    ``feature_info`` named from this model, ``forward_features``, ``forward_intermediates``), so
    hooks, probes and weight transfer treat classifiers and dense models alike.
    """


def is_spatial(info: Mapping[str, Any], spec: InputSpec) -> bool:
    """Whether a stage's map has spatial extent on ``spec``'s images (not a flat vector)."""
    return info["reduction"] < max(spec.image_size)


def deepest_spatial_stage(backbone: Backbone, spec: InputSpec) -> int:
    """The index of the deepest stage with spatial extent (FCN's and Segmenter's input)."""
    return max(i for i, info in enumerate(backbone.feature_info) if is_spatial(info, spec))


def build_backbone(values: Mapping[str, Any] | None, spec: InputSpec) -> Backbone:
    """The :class:`Backbone` of the classification model ``values`` names, built for ``spec``.

    ``values`` is the ``model.backbone`` section (``name`` plus that model's options), validated
    against the model's config: an unknown key or a value out of range is a :class:`ConfigError`
    naming ``model.backbone.<key>``. A segmentation model, or a model whose stages have no
    spatial extent, is refused with the list of valid backbones.
    """
    from paralab.platform.config import validate_section

    values = _plain(values)
    if values.get("init_from") is not None:
        raise ConfigError(
            f"{SECTION}.init_from: a backbone's weights are set for the whole model. Set "
            f"model.init_from={values['init_from']} instead, and drop {SECTION}.init_from"
        )
    name = values.get("name")
    if name is None:
        raise ConfigError(
            f"{SECTION}.name is missing: choose one of {', '.join(dense_backbones())}. "
            f"Set e.g. {SECTION}.name=resnet18"
        )
    if name not in MODELS:
        raise ConfigError(
            f"{SECTION}.name={name!r}: unknown model. Choose one of {', '.join(dense_backbones())}"
        )
    entry = MODELS.get(str(name))
    task = entry.meta.get("task", "classification")
    if task != "classification":
        raise ConfigError(
            f"{SECTION}.name={name!r} is a {task} model, not a backbone. Choose one of the "
            f"classification models: {', '.join(dense_backbones())}"
        )
    cfg = validate_section(SECTION, values, entry.config) if entry.config else values
    try:
        backbone = _backbone_of(entry.obj(cfg, spec))
    except ConfigError as error:  # builders name their keys model.<key>: here model.backbone.<key>
        message = re.sub(r"\bmodel\.(?!backbone\b)", f"{SECTION}.", str(error))
        raise type(error)(message) from None
    problem = _unfit(backbone, spec)
    if problem:
        raise ConfigError(
            f"{SECTION}.name={name!r}: {problem}, so it cannot carry a dense head. "
            f"Choose one of {', '.join(dense_backbones(spec.in_channels))}"
        )
    return backbone


def dense_backbones(in_channels: int = 3) -> list[str]:
    """The registered classification models that can carry a dense head: each is built with its
    defaults on a typical 32x32 image and kept if it has a spatial stage (an error path and
    test helper: it builds every model once)."""
    spec = InputSpec(in_channels, _PROBE_SIZE, 2)
    names = []
    for entry in MODELS.entries():
        if entry.meta.get("task", "classification") != "classification":
            continue
        try:
            cfg = entry.config() if entry.config else {}
            if not _unfit(_backbone_of(entry.obj(cfg, spec)), spec):
                names.append(entry.name)
        except (ParalabError, TypeError, ValueError):
            continue
    return names


def finish(model: M, cfg: DenseConfig, spec: InputSpec) -> M:
    """Freeze what the head never reaches (``model.init_from`` is loaded by the runner, for
    every model alike)."""
    freeze_unreached(model, spec)
    return model


def freeze_unreached(model: nn.Module, spec: InputSpec) -> list[str]:
    """Set ``requires_grad=False`` on the parameters no output depends on (ViT's final norm
    under a U-Net, fedavg_cnn's fc under an FCN), found by one backward pass on a blank image.

    They stay in the state dict (weights still move between tasks), but DDP, whose gradient
    reduction waits for every trainable parameter, and the optimizers skip them. Returns their
    names.
    """
    was_training = model.training
    model.eval()  # no dropout or batch-norm statistics touched
    x = torch.zeros(2, spec.in_channels, *spec.image_size)
    model(x).sum().backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for name, param in model.named_parameters():
        param.grad = None
        if name in unreached:
            param.requires_grad_(False)
    model.train(was_training)
    return unreached


def _plain(values: Any) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(values, DictConfig):
            raise ConfigError(
                f"{SECTION}={values!r}: must be a mapping with a name and that model's options, "
                f"e.g. {SECTION}={{name: resnet18}}"
            )
        values = OmegaConf.to_container(values, resolve=True)
    return dict(values)


def _backbone_of(model: nn.Module) -> Any:
    return getattr(model, "backbone", None)


def _unfit(backbone: Any, spec: InputSpec) -> str | None:
    """Why ``backbone`` cannot carry a dense head, or None."""
    if not isinstance(backbone, Backbone):
        return "its model has no Backbone under .backbone"
    if type(backbone).forward_intermediates is Backbone.forward_intermediates:
        return "its backbone has no forward_intermediates (no feature maps)"
    if not any(is_spatial(info, spec) for info in backbone.feature_info):
        return "its stages are flat vectors (each stage's reduction is the image size)"
    return None
