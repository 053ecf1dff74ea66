"""Optimizer and learning-rate schedule from :class:`OptimConfig`, shared by every paradigm."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from paralab.errors import ConfigError
from paralab.platform.bounds import check_bounds
from paralab.platform.schema import OPTIMIZERS, SCHEDULERS, OptimConfig

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "check_optim"]


def check_optim(cfg: OptimConfig) -> None:
    """The declared ranges of :class:`OptimConfig` (for configs built in Python) and the
    combinations torch refuses only when the optimizer is built."""
    check_bounds("optim", cfg)
    if cfg.name == "sgd" and cfg.nesterov and cfg.momentum == 0:
        raise ConfigError(
            "optim.nesterov=true needs momentum (torch refuses it with optim.momentum=0). "
            "Set optim.momentum=0.9 or optim.nesterov=false"
        )


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimConfig
) -> torch.optim.Optimizer:
    check_optim(cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )  # fmt: skip
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step schedule over ``epochs`` epochs (``None`` for a constant rate)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    sched = torch.optim.lr_scheduler
    if cfg.scheduler == "none":
        main = None
    elif cfg.scheduler == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=total - warmup)
    elif cfg.scheduler == "step":
        main = sched.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
    else:
        return sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    if warmup <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
    if main is None:
        return ramp
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
