from __future__ import annotations

from paralab.platform.registry import Registry

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register
