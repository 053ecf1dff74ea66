"""Datasets, one module per family, registered by name. They know nothing of tasks,
continual experiences or federated clients: paradigms build those from them."""

from paralab.platform.data.base import ClassificationData, DataConfig, InMemoryImages, make_loader
from paralab.platform.data.registry import DATASETS, register_dataset
from paralab.platform.registry import import_modules

import_modules(
    DATASETS,
    __name__,
    [
        "digits",
        "mnist",
        "cifar",
        "image_folder",
        "canvas",
        "mask_folder",
        "photos",
        "canvas_boxes",
        "coco",
        "nuclei",
        "canvas_captions",
        "caption_folder",
    ],
)

__all__ = [
    "DATASETS",
    "ClassificationData",
    "DataConfig",
    "InMemoryImages",
    "make_loader",
    "register_dataset",
]
