"""``paradigm=continual``: the platform's model trained on a stream of experiences by Avalanche.

After every experience the model is tested on every test experience (a row of the accuracy
matrix), the row is logged (``step`` = experience), one progress line goes to stderr and a
checkpoint is written; ``paralab run --resume`` continues at the next experience.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from paralab.errors import ConfigError
from paralab.platform.divergence import check_finite
from paralab.platform.paradigm import Paradigm, register_paradigm
from paralab.strategies.continual import checkpoint
from paralab.strategies.continual.config import ContinualConfig
from paralab.strategies.continual.devices import check_device, resolve_device
from paralab.strategies.continual.methods import check_method, takes_channels_last
from paralab.strategies.continual.metrics import continual_metrics, plot_matrix, write_matrix_json
from paralab.strategies.continual.scenarios import DOMAIN_SHIFTS, SCENARIOS, build_stream

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData
    from paralab.platform.runner import RunContext


def check_scenario(cfg: ContinualConfig, num_classes: int) -> None:
    """Scenario choices and what they need of the data (ranges are declared on the fields)."""
    if cfg.scenario not in SCENARIOS:
        raise ConfigError(
            f"paradigm.scenario={cfg.scenario!r}: choose one of {', '.join(SCENARIOS)}"
        )
    if cfg.domain_shift not in DOMAIN_SHIFTS:
        raise ConfigError(
            f"paradigm.domain_shift={cfg.domain_shift!r}: choose one of {', '.join(DOMAIN_SHIFTS)}"
        )
    if cfg.scenario != "domain" and cfg.n_experiences > num_classes:
        raise ConfigError(
            f"paradigm.n_experiences={cfg.n_experiences} exceeds the dataset's {num_classes} "
            f"classes: a {cfg.scenario}-incremental experience needs at least one class"
        )
    if cfg.scenario == "task" and num_classes % cfg.n_experiences:
        raise ConfigError(
            f"paradigm.n_experiences={cfg.n_experiences}: the task scenario needs equal tasks "
            f"(one head each); pick a divisor of the {num_classes} classes"
        )


@register_paradigm("continual", config=ContinualConfig)
class Continual(Paradigm):
    """Learn a stream of experiences with an Avalanche strategy; report the accuracy matrix."""

    cfg: ContinualConfig

    @property
    def strategy(self) -> str:
        return "+".join([self.cfg.strategy, *self.cfg.plugins])

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:
        check_scenario(self.cfg, data.num_classes)
        check_method(self.cfg)
        check_device(config.trainer)

    def run(self, ctx: RunContext) -> dict[str, float]:
        from paralab.platform.tasks.optim import build_optimizer
        from paralab.strategies.continual import engine

        cfg, config, data = self.cfg, ctx.config, ctx.data
        epochs = cfg.epochs or config.trainer.max_epochs
        stream = build_stream(
            data.train,
            data.test,
            data.num_classes,
            cfg.scenario,
            cfg.n_experiences,
            cfg.class_order_seed,
            cfg.domain_shift,
        )
        model = ctx.build_model(
            channels_last=config.trainer.channels_last and takes_channels_last(cfg)
        )
        if cfg.scenario == "task":
            per_task = data.num_classes // cfg.n_experiences
            model = engine.MultiHead(model.backbone, model.num_features, len(stream), per_task)
        device = resolve_device(config.trainer)
        strategy = engine.build_strategy(
            cfg,
            model,
            build_optimizer(model.parameters(), config.optim),
            optim_cfg=config.optim,
            stream=stream,
            device=device,
            epochs=epochs,
            batch_size=config.data.batch_size,
            eval_batch_size=config.data.eval_batch_size,
            seed=config.seed,
        )
        benchmark = engine.to_benchmark(stream)
        folder = ctx.tracker.checkpoint_dir
        progress = checkpoint.Progress()
        if ctx.resuming:
            progress = checkpoint.load(
                folder,
                strategy,
                device,
                lambda params: build_optimizer(params, config.optim),
                [exp.dataset for exp in benchmark.train_stream],
            )
        labels = [
            f"{i}:" + ",".join(map(str, e.classes)) if cfg.scenario != "domain" else str(i)
            for i, e in enumerate(stream)
        ]
        steps = [None] if cfg.strategy == "joint" else list(range(len(stream)))
        for step in steps[progress.next_experience :]:
            started = time.perf_counter()
            loss = engine.train(
                strategy, benchmark.train_stream if step is None else benchmark.train_stream[step]
            )
            where = f"experience {progress.next_experience + 1}/{len(steps)}"
            check_finite({"train/loss": loss}, where=where)  # before a NaN model is saved
            progress.train_times.append(time.perf_counter() - started)
            progress.matrix.append(engine.evaluate(strategy, benchmark.test_stream))
            self._log_step(ctx, progress, progress.next_experience - 1, len(steps), labels)
            if config.tracking.checkpoints:
                checkpoint.save(folder, strategy, progress)
        write_matrix_json(ctx.run_dir / "accuracy_matrix.json", progress.matrix, labels)
        plot_matrix(
            ctx.run_dir / "accuracy_matrix.png",
            progress.matrix,
            labels,
            f"{self.strategy} ({cfg.scenario}-incremental, {config.data.name})",
        )
        metrics = continual_metrics(progress.matrix)
        metrics["train_time_s"] = sum(progress.train_times)
        for j, value in enumerate(progress.matrix[-1]):
            metrics[f"test/acc_exp{j}"] = value
        for i, seconds in enumerate(progress.train_times):
            metrics[f"train_time_s/exp{i}"] = seconds
        return metrics

    def _log_step(
        self,
        ctx: RunContext,
        progress: checkpoint.Progress,
        i: int,
        n_steps: int,
        labels: list[str],
    ) -> None:
        """Log row ``i`` of the matrix (step = experience) and print one progress line."""
        row, seconds = progress.matrix[i], progress.train_times[i]
        seen = row[: i + 1] if n_steps > 1 else row
        record = {
            "experience": float(i),
            "exp/train_time_s": seconds,
            "exp/acc_seen": sum(seen) / len(seen),
            "exp/acc_all": sum(row) / len(row),
            **{f"exp/acc_exp{j}": v for j, v in enumerate(row)},
        }
        ctx.tracker.log_metrics(record, step=i)
        what = labels[i] if n_steps > 1 else "all experiences"
        print(
            f"[continual {self.strategy}] experience {i + 1}/{n_steps} ({what}): "
            f"train {seconds:.1f} s, acc on seen {record['exp/acc_seen']:.3f}, "
            f"on all {record['exp/acc_all']:.3f}",
            file=sys.stderr,
            flush=True,
        )
