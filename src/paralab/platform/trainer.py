"""The Lightning Trainer every Lightning-based paradigm uses, built from :class:`TrainerConfig`."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from paralab.platform.progress import say
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


LAST = "last"  # last.ckpt: what --resume continues from


def checkpoint_callbacks(
    dirpath: str, monitor: str = "val/acc", higher_is_better: bool = True
) -> list[ModelCheckpoint]:
    """The best epoch by ``monitor`` (the task's ``val/<headline>``; ``epochNNN.ckpt``) and
    ``last.ckpt`` after every epoch.

    Lightning 2.6 writes ``save_last`` only when a top-k checkpoint was written in the same step,
    i.e. when ``monitor`` improved, so ``--resume`` would redo the epochs since the best one. A
    second, unmonitored checkpoint named ``last`` is written every epoch instead. Lightning runs
    them in this order, so ``last.ckpt`` holds the best checkpoint's updated state.
    """
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        save_top_k=1,
        monitor=monitor,
        mode="max" if higher_is_better else "min",
    )
    last = ModelCheckpoint(
        dirpath=dirpath,
        filename=LAST,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    return [best, last]


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


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    """Start :func:`peak_memory`'s count afresh: a suite runs its runs in one process, whose
    lifetime peak would otherwise be every later run's figure. Linux resets the resident peak
    (``VmHWM``) when 5 is written to ``/proc/self/clear_refs``; elsewhere nothing resets."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str | None = None) -> dict[str, float]:
    """This process's peak resident memory in MB since :func:`reset_peak_memory` (Linux's
    ``VmHWM``; elsewhere the process's lifetime peak) and, on a CUDA device, the peak memory
    torch allocated there."""
    peak_mb = None
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    peak_mb = int(line.split()[1]) / 2**10  # kB
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, B on macOS
        peak_mb = peak / (2**20 if sys.platform == "darwin" else 2**10)
    out = {"memory/peak_rss_mb": float(peak_mb or 0.0)}
    if device is not None and torch.device(device).type == "cuda":
        out["memory/peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


class EpochLine(Callback):
    """One line per epoch on stderr, for logs and pipes where a progress bar would be noise.

    Every process reads ``callback_metrics`` (reading it reduces the values logged with
    ``sync_dist``, a collective call: one process alone would wait forever); rank 0 prints.
    """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        shown = {  # stage/name; per-class values (val/iou/<class>) go to metrics.csv only
            k: float(v) for k, v in trainer.callback_metrics.items() if k.count("/") == 1
        }
        if not trainer.is_global_zero:
            return
        text = "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
        say(f"{where(trainer)}  {text}")


def where(trainer) -> str:
    """``epoch 3/5``, or under a step budget ``epoch 3, step 1200/2000``."""
    if trainer.max_steps > 0:
        return f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}/{trainer.max_steps}"
    return f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"


class StepBudget(Callback):
    """``trainer.max_steps``: stop the fit *through* ``should_stop`` at the budget's last step.

    Lightning ends a fit that reaches ``max_steps`` in the middle of an epoch without validating
    it, so the best-epoch checkpoint and ``val/*`` would describe the model of the epoch before.
    Asking it to stop at that step instead validates the final model first, as an early stop
    does, and lets the module log the partial epoch's training metrics.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class DivergenceCheck(Callback):
    """Stop the fit once the epoch's training loss is NaN or infinite (:mod:`.divergence`).

    The loss is summed on the device (no host sync per batch) and checked before validation,
    so the checkpoint written after validation never holds a diverged model, and at the end of
    the epoch for runs without validation. The :class:`DivergedError` raised here leaves
    ``trainer.fit`` as it is (Lightning tears down and re-raises the original exception).
    """

    def __init__(self) -> None:
        self._total: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._total = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().sum()
            self._total = loss if self._total is None else self._total + loss

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)

    def _check(self, trainer) -> None:
        from paralab.platform.divergence import check_finite

        if self._total is not None:
            check_finite({"train/loss": float(self._total)}, where=where(trainer))


class CountTestImages(Callback):
    """Counts the test images seen by every process (``test/images``): under DDP each image
    must be tested exactly once (see :func:`eval_sampler`)."""

    def __init__(self) -> None:
        self.count = 0

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._seen = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._seen += len(batch[1])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        seen = torch.tensor(float(self._seen), device=pl_module.device)
        self.count = int(trainer.strategy.reduce(seen, reduce_op="sum").item())


def eval_sampler(dataset, trainer: L.Trainer):
    """A sampler that hands each process a disjoint part of ``dataset`` under DDP, so every
    image is evaluated exactly once (Lightning's default pads the parts by repeating images,
    which counts some twice); ``None`` (in order, whole) in a single process, or when there are
    fewer images than processes (a process without a batch would stall the others). Metrics sync
    uneven parts correctly: torchmetrics sums counts, Lightning weights means by batch size."""
    if trainer.world_size <= 1 or len(dataset) < trainer.world_size:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )


def build_trainer(
    cfg: TrainerConfig,
    tracker: Tracker | None,
    *,
    checkpoints: bool = True,
    callbacks: list[Callback] | None = None,
    monitor: str = "val/acc",
    higher_is_better: bool = True,
    **overrides: Any,
) -> L.Trainer:
    """The Trainer for ``cfg``; with ``checkpoints``, the best epoch by ``monitor`` is kept."""
    show_bar = sys.stderr.isatty() if cfg.progress_bar is None else cfg.progress_bar
    all_callbacks: list[Callback] = [RngStateInCheckpoint(), DivergenceCheck()]
    if cfg.max_steps:
        all_callbacks.append(StepBudget())
    if not show_bar:
        all_callbacks.append(EpochLine())
    if checkpoints and tracker is not None:
        all_callbacks += checkpoint_callbacks(
            str(tracker.checkpoint_dir), monitor, higher_is_better
        )
    all_callbacks += callbacks or []
    options: dict[str, Any] = dict(
        max_epochs=-1 if cfg.max_steps else cfg.max_epochs,  # a step budget: epochs unbounded
        max_steps=cfg.max_steps or -1,
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
