from __future__ import annotations

from paralab.platform.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register
