"""Supervised training with a Lightning Trainer: the offline upper bound in every comparison.

Devices come from ``trainer.*``: ``trainer.devices=2 trainer.strategy=ddp`` trains data-parallel
(gloo on CPUs, NCCL on GPUs); Lightning shards the data and torchmetrics syncs the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from paralab.platform.runner import RunContext
from paralab.strategies.registry import Paradigm, ParadigmConfig, register_paradigm


@dataclass
class SupervisedConfig(ParadigmConfig):
    name: str = "supervised"
    test: bool = True


@register_paradigm("supervised", config=SupervisedConfig)
class Supervised(Paradigm):
    """Train on all data at once (Lightning Trainer), then evaluate on the test split."""

    def run(self, ctx: RunContext) -> dict[str, float]:
        from paralab.platform.data import make_loader
        from paralab.platform.trainer import Throughput, build_trainer

        data, dcfg = ctx.data, ctx.config.data
        task = ctx.build_task()
        throughput = Throughput()
        trainer = build_trainer(
            ctx.config.trainer, ctx.tracker, checkpoints=ctx.config.tracking.checkpoints,
            callbacks=[throughput, *ctx.callbacks],
        )  # fmt: skip
        train = make_loader(data.train, dcfg.batch_size, shuffle=True, seed=ctx.config.seed,
                            num_workers=dcfg.num_workers)  # fmt: skip
        val = make_loader(data.val, dcfg.eval_batch_size, shuffle=False)
        trainer.fit(task, train, val if len(data.val) else None, ckpt_path=ctx.last_checkpoint())
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if self.cfg.test:
            trainer.test(task, make_loader(data.test, dcfg.eval_batch_size, shuffle=False),
                         verbose=False)  # fmt: skip
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step,
                       world_size=trainer.world_size)  # fmt: skip
        metrics["time/train_images_per_s"] = throughput.images_per_second
        return metrics
