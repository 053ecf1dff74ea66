"""Supervised training with a Lightning Trainer: the offline upper bound in every comparison.

Devices come from ``trainer.*``: ``trainer.devices=2 trainer.strategy=ddp`` trains data-parallel
(gloo on CPUs, NCCL on GPUs); Lightning shards the data and torchmetrics syncs the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from paralab.platform.paradigm import Paradigm, ParadigmConfig, register_paradigm
from paralab.platform.runner import RunContext


def eval_loader(dataset, batch_size: int, trainer, collate=None):
    """Validation or test batches in order; under DDP each process takes its own part and every
    image is evaluated exactly once (:func:`paralab.platform.trainer.eval_sampler`)."""
    from torch.utils.data import DataLoader

    from paralab.platform.data import make_loader
    from paralab.platform.trainer import eval_sampler

    loader = make_loader(dataset, batch_size, shuffle=False, collate=collate)
    sampler = eval_sampler(dataset, trainer)
    if sampler is None:
        return loader
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      collate_fn=loader.collate_fn)  # fmt: skip


@dataclass
class SupervisedConfig(ParadigmConfig):
    name: str = "supervised"
    test: bool = True


@register_paradigm("supervised", config=SupervisedConfig)
class Supervised(Paradigm):
    """Train on all data at once (Lightning Trainer), then evaluate on the test split."""

    step_budget = None  # trainer.max_steps: Lightning's own

    def check(self, config, data) -> None:
        """Build the Trainer once, without loggers or checkpoints (it writes nothing): settings
        Lightning refuses (a strategy without its GPU or package, CPU device ids) surface here."""
        from paralab.errors import ConfigError
        from paralab.platform.trainer import build_trainer

        try:
            build_trainer(config.trainer, None, checkpoints=False)
        except Exception as error:  # Lightning raises ValueError, TypeError, ImportError...
            t = config.trainer
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ConfigError(
                f"trainer.accelerator={t.accelerator} trainer.devices={t.devices} "
                f"trainer.strategy={t.strategy} trainer.precision={t.precision}: Lightning "
                f"refuses this combination: {reason}"
            ) from None

    def run(self, ctx: RunContext) -> dict[str, float]:
        from paralab.platform.data import make_loader
        from paralab.platform.trainer import (
            CountTestImages,
            Throughput,
            build_trainer,
            peak_memory,
            reset_peak_memory,
        )

        data, dcfg = ctx.data, ctx.config.data
        reset_peak_memory()  # the run's own peak, not an earlier run's in the same process
        module = ctx.build_module()
        task = ctx.task
        throughput, tested = Throughput(), CountTestImages()
        trainer = build_trainer(
            ctx.config.trainer, ctx.tracker, checkpoints=ctx.config.tracking.checkpoints,
            callbacks=[throughput, tested, *ctx.callbacks], monitor=f"val/{task.headline}",
            higher_is_better=task.higher_is_better,
        )  # fmt: skip
        train = make_loader(data.train, dcfg.batch_size, shuffle=True, seed=ctx.config.seed,
                            num_workers=dcfg.num_workers, collate=task.collate)  # fmt: skip
        val = eval_loader(data.val, dcfg.eval_batch_size, trainer, task.collate)
        # weights_only: a run folder may come from anywhere; Lightning's default follows torch's
        # (which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD can turn off)
        trainer.fit(module, train, val if len(data.val) else None, ckpt_path=ctx.last_checkpoint(),
                    weights_only=True)  # fmt: skip
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if self.cfg.test:
            test = eval_loader(data.test, dcfg.eval_batch_size, trainer, task.collate)
            trainer.test(module, test, verbose=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            metrics["test/images"] = tested.count
        metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step,
                       world_size=trainer.world_size)  # fmt: skip
        metrics["time/train_images_per_s"] = throughput.images_per_second
        metrics |= peak_memory(module.device)
        ctx.draw_predictions(module.model, module.device)
        return metrics
