"""Models, one module per family, registered by name with ``@register_model``."""

from paralab.platform.models.base import Backbone, Classifier, InputSpec, ModelConfig
from paralab.platform.models.registry import MODELS, register_model
from paralab.platform.registry import import_modules

import_modules(
    MODELS,
    __name__,
    [
        "cnn",
        "fedavg_cnn",
        "mlp",
        "resnet",
        "vit",
        "unet",
        "fcn",
        "segmenter",
        "detection.detr",
        "detection.rcnn",
        "detection.single_stage",
        "clip",
    ],
)

__all__ = ["MODELS", "Backbone", "Classifier", "InputSpec", "ModelConfig", "register_model"]
