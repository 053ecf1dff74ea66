"""The typed top level of a run config. Component sections (model, data, paradigm) are typed by
the config dataclass their registered component declares; see :mod:`paralab.platform.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerConfig:
    """Lightning Trainer options; continual and federated paradigms read epochs and device."""

    max_epochs: int = 5
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    deterministic: Any = True
    gradient_clip_val: float | None = None
    limit_train_batches: Any = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    num_threads: int | None = None
    progress_bar: bool | None = None
    channels_last: bool = True


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    step_size: int = 30
    gamma: float = 0.1
    label_smoothing: float = 0.0


@dataclass
class TrackingConfig:
    wandb: str = "offline"
    project: str = "paralab"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    checkpoints: bool = True


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    model: Any = None
    data: Any = None
    paradigm: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


WANDB_MODES = ("offline", "online", "disabled")
