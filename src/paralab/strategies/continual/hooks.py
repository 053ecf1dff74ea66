"""What runs inside Avalanche's training loop besides the strategy: the run's learning-rate
schedule, the iteration budget, the loss watch for the divergence check, and checkpoints inside
an experience. Imported by :mod:`.engine` only (it imports Avalanche at the top)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from avalanche.core import SupervisedPlugin

from paralab.platform.schema import OptimConfig
from paralab.platform.tasks.optim import build_scheduler
from paralab.strategies.continual.avalanche_compat import clear_stop


class ConfigSchedule(SupervisedPlugin):
    """The run's ``optim`` schedule, restarted at every experience over its epochs (or over
    its ``iterations``, which then count as one epoch of the schedule)."""

    def __init__(self, cfg: OptimConfig, epochs: int, iterations: int | None = None) -> None:
        super().__init__()
        self.cfg, self.epochs, self.iterations, self.scheduler = cfg, epochs, iterations, None
        self.started = False  # this experience's schedule is built (a resumed run builds anew)

    def before_training_epoch(self, strategy, **kwargs):
        if not self.started:  # an experience starts, or resumes in its middle
            self.started = True
            for group in strategy.optimizer.param_groups:
                group["lr"] = group["initial_lr"] = self.cfg.lr
            epochs, steps = (1, self.iterations) if self.iterations else (self.epochs, 0)
            steps = steps or len(strategy.dataloader)
            self.scheduler = build_scheduler(strategy.optimizer, self.cfg, epochs, steps)
            if self.scheduler is not None and strategy.clock.train_exp_iterations:
                with warnings.catch_warnings():  # "step() before optimizer.step()": replayed
                    warnings.simplefilter("ignore", UserWarning)
                    for _ in range(strategy.clock.train_exp_iterations):
                        self.scheduler.step()

    def after_training_iteration(self, strategy, **kwargs):
        if self.scheduler is not None:
            self.scheduler.step()

    def after_training_exp(self, strategy, **kwargs):
        self.scheduler, self.started = None, False  # rebuilt next experience (never saved)


class IterationBudget(SupervisedPlugin):
    """``paradigm.iterations`` optimizer steps per experience, the budget continual-learning
    papers give (van de Ven & Tolias 2019: 2,000 per task, batch 128): the experience runs as
    many epochs as cover them (the last one cut short), whatever its size."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations, self.done = iterations, 0

    def before_training_exp(self, strategy, **kwargs):
        self.done = 0
        strategy.train_epochs = math.ceil(self.iterations / max(1, len(strategy.dataloader)))

    def after_training_iteration(self, strategy, **kwargs):
        self.done += 1
        if self.done >= self.iterations:
            strategy.stop_training()

    def after_training_exp(self, strategy, **kwargs):
        clear_stop(strategy)


class WithinExperience:
    """Checkpoints inside an experience, and resuming from one (mixed into every strategy).

    After each epoch that is not the experience's last, ``on_epoch_end(strategy)`` saves (see
    :func:`.checkpoint.save_within`). A run resumed from such a file first restores the last
    experience boundary, so the experience starts exactly as it did (its ``before_training_exp``
    work: buffers and loaders, SI's anchors, iCaRL's class list, Cumulative's dataset); once
    that work is done (``_before_training_exp``, after every plugin and the clock), ``restore``
    writes the saved mid-experience state over it, and only the epochs left are trained.
    """

    on_epoch_end: Callable[[Any], None] | None = None
    _restore: Callable[[Any], None] | None = None
    _total_epochs: int = 0

    def resume_within(self, restore: Callable[[Any], None]) -> None:
        """Call ``restore(strategy)`` once the next experience's set-up is done."""
        self._restore = restore

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        self._total_epochs = self.train_epochs
        if self._restore is not None:
            restore, self._restore = self._restore, None
            restore(self)
            self.train_epochs = self._total_epochs - self.clock.train_exp_epochs

    def _after_training_epoch(self, **kwargs):
        super()._after_training_epoch(**kwargs)
        more = self.clock.train_exp_epochs < self._total_epochs and not self._stop_training
        if more and self.on_epoch_end is not None:
            self.on_epoch_end(self)

    def _after_training_exp(self, **kwargs):
        self.train_epochs = self._total_epochs
        super()._after_training_exp(**kwargs)


class LossWatch(SupervisedPlugin):
    """The mean training loss of the current experience, for the divergence check.

    Summed as a tensor (no host sync per iteration); read once per experience.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total, self.count = None, 0

    def before_training_exp(self, strategy, **kwargs):
        self.total, self.count = None, 0

    def after_training_iteration(self, strategy, **kwargs):
        loss = strategy.loss.detach()
        self.total = loss if self.total is None else self.total + loss
        self.count += 1

    @property
    def mean(self) -> float:
        return float(self.total) / self.count if self.count else 0.0
