"""Tasks, one module per kind of problem, registered by name; one generic Lightning module
(:mod:`.module`) and one evaluation loop (:mod:`.evaluate`) serve them all."""

from paralab.platform.registry import import_modules
from paralab.platform.tasks.base import TASKS, Task, TaskConfig, models_for, register_task

import_modules(
    TASKS,
    __name__,
    [
        "classification",
        "segmentation",
        "detection",
        "image_text",
        "pretext.rotation",
        "pretext.jigsaw",
        "pretext.colorization",
        "pretext.simclr",
    ],
)

__all__ = ["TASKS", "Task", "TaskConfig", "models_for", "register_task"]
