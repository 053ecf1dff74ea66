"""The Lightning Trainer every Lightning-based paradigm uses, built from :class:`TrainerConfig`."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from paralab.platform.schema import TrainerConfig
from paralab.platform.tracking import Tracker


class RngStateInCheckpoint(Callback):
    """Store torch's RNG in each checkpoint so a resumed run draws the same dropout and
    augmentation as an uninterrupted one."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["paralab_torch_rng"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if "paralab_torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["paralab_torch_rng"])


class Throughput(Callback):
    """Training images per second, timed from each epoch's first batch to its last (no eval)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self._start = time.perf_counter()
            self._images = 0
        self._images += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if hasattr(self, "_start"):
            self.seconds += time.perf_counter() - self._start
            self.images += self._images

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class EpochLine(Callback):
    """One line per epoch on stderr, for logs and pipes where a progress bar would be noise."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k}
        text = "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {text}", file=sys.stderr)


def build_trainer(
    cfg: TrainerConfig,
    tracker: Tracker | None,
    *,
    checkpoints: bool = True,
    callbacks: list[Callback] | None = None,
    **overrides: Any,
) -> L.Trainer:
    show_bar = sys.stderr.isatty() if cfg.progress_bar is None else cfg.progress_bar
    all_callbacks: list[Callback] = [RngStateInCheckpoint()]
    if not show_bar:
        all_callbacks.append(EpochLine())
    if checkpoints and tracker is not None:
        all_callbacks.append(
            ModelCheckpoint(
                dirpath=str(tracker.checkpoint_dir),
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                save_last=True,
                save_top_k=1,
                monitor="val/acc",
                mode="max",
            )
        )
    all_callbacks += callbacks or []
    options: dict[str, Any] = dict(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        gradient_clip_val=cfg.gradient_clip_val,
        limit_train_batches=cfg.limit_train_batches,
        check_val_every_n_epoch=cfg.check_val_every_n_epoch,
        log_every_n_steps=cfg.log_every_n_steps,
        logger=tracker.loggers if tracker is not None else False,
        callbacks=all_callbacks,
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        enable_checkpointing=checkpoints and tracker is not None,
        default_root_dir=str(tracker.run_dir) if tracker is not None else None,
    )
    options.update(overrides)
    return L.Trainer(**options)
