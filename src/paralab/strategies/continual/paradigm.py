"""``paradigm=continual``: the platform's model trained on a stream of experiences by Avalanche.

The run's task gives the strategy its criterion and judges the model: after every experience
the model is tested on every test experience with the task's metrics, and the task's headline
(accuracy, or the mean IoU of the experience's classes) fills a row of the matrix (named
``accuracy_matrix`` for the field's usual case). The row is logged (``step`` = experience), one
progress line goes to stderr and a checkpoint is written; ``paralab run --resume`` continues at
the next experience.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from paralab.errors import ConfigError
from paralab.platform.divergence import check_finite
from paralab.platform.paradigm import Paradigm, register_paradigm
from paralab.platform.progress import say
from paralab.strategies.continual import checkpoint
from paralab.strategies.continual.config import ContinualConfig
from paralab.strategies.continual.devices import check_device, resolve_device
from paralab.strategies.continual.methods import check_method, takes_channels_last
from paralab.strategies.continual.metrics import continual_metrics, plot_matrix, write_matrix_json
from paralab.strategies.continual.scenarios import (
    DOMAIN_SHIFTS,
    SCENARIOS,
    class_order,
    stream_for,
)

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData
    from paralab.platform.runner import RunContext
    from paralab.platform.tasks import Task


def check_scenario(cfg: ContinualConfig, num_classes: int, task: Task | None = None) -> None:
    """Scenario choices and what they need of the data and task (ranges are declared on the
    fields). ``num_classes``: the classes a class-incremental stream hands out."""
    if cfg.scenario not in SCENARIOS:
        raise ConfigError(
            f"paradigm.scenario={cfg.scenario!r}: choose one of {', '.join(SCENARIOS)}"
        )
    if cfg.domain_shift not in DOMAIN_SHIFTS:
        raise ConfigError(
            f"paradigm.domain_shift={cfg.domain_shift!r}: choose one of {', '.join(DOMAIN_SHIFTS)}"
        )
    if task is not None and cfg.scenario not in task.scenarios:
        raise ConfigError(
            f"paradigm.scenario={cfg.scenario} does not apply to task={task.name}: choose one "
            f"of {', '.join(task.scenarios)}"
        )
    split = cfg.scenario != "domain" or cfg.domain_shift == "split"
    if split and cfg.n_experiences > num_classes:
        raise ConfigError(
            f"paradigm.n_experiences={cfg.n_experiences} exceeds the dataset's {num_classes} "
            f"classes: a {cfg.scenario}-incremental experience needs at least one class"
        )
    if local_outputs(cfg, num_classes) is not None and num_classes % cfg.n_experiences:
        what = "one head each" if cfg.scenario == "task" else "one head for every experience"
        raise ConfigError(
            f"paradigm.n_experiences={cfg.n_experiences}: the {cfg.scenario} scenario "
            f"(domain_shift={cfg.domain_shift}) needs equal class slices ({what}); pick a "
            f"divisor of the {num_classes} classes"
        )


def local_outputs(cfg: ContinualConfig, num_classes: int) -> int | None:
    """The outputs of a head that numbers each experience's classes 0..k-1 (the task scenario's
    heads; the split domain scenario's one head), or None where the head has every class."""
    if cfg.scenario == "task" or (cfg.scenario == "domain" and cfg.domain_shift == "split"):
        return num_classes // cfg.n_experiences
    return None


@register_paradigm("continual", config=ContinualConfig)
class Continual(Paradigm):
    """Learn a stream of experiences with an Avalanche strategy; report the accuracy matrix."""

    cfg: ContinualConfig
    step_budget = "a continual run's budget is per experience: paradigm.iterations=N"

    @property
    def strategy(self) -> str:
        return "+".join([self.cfg.strategy, *self.cfg.plugins])

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:
        from paralab.platform.runner import build_task

        task = build_task(config, data)
        check_scenario(self.cfg, len(task.incremental_classes()), task)
        check_method(self.cfg, task.name, task.makes_inputs)
        if self.cfg.epochs is not None and self.cfg.iterations is not None:
            raise ConfigError(
                f"paradigm.epochs={self.cfg.epochs} and paradigm.iterations="
                f"{self.cfg.iterations}: a budget per experience is one or the other. Set "
                "paradigm.epochs=null (iterations) or paradigm.iterations=null (epochs)"
            )
        check_device(config.trainer)

    def run(self, ctx: RunContext) -> dict[str, float]:
        from paralab.platform.tasks.optim import build_optimizer
        from paralab.strategies.continual import engine

        cfg, config, data, task = self.cfg, ctx.config, ctx.data, ctx.task
        epochs = cfg.epochs or config.trainer.max_epochs
        # joint: all classes seen, all labelled
        stream = stream_for(cfg, data, task, background_shift=cfg.strategy != "joint")
        per_experience = local_outputs(cfg, data.num_classes)
        model = ctx.build_model(
            per_experience, channels_last=config.trainer.channels_last and takes_channels_last(cfg)
        )
        if cfg.scenario == "task":
            model = engine.MultiHead(
                model.backbone, model.num_features, len(stream), per_experience
            )
        device = resolve_device(config.trainer)
        strategy = engine.build_strategy(
            cfg,
            model,
            build_optimizer(model.parameters(), config.optim),
            task=task,
            optim_cfg=config.optim,
            stream=stream,
            device=device,
            epochs=epochs,
            batch_size=config.data.batch_size,
            eval_batch_size=config.data.eval_batch_size,
            seed=config.seed,
        )
        benchmark = engine.to_benchmark(stream, task)
        folder = ctx.tracker.checkpoint_dir
        progress = checkpoint.Progress()
        datasets = [exp.dataset for exp in benchmark.train_stream]

        def make_optimizer(params):
            return build_optimizer(params, config.optim)

        if ctx.resuming:
            progress = checkpoint.load(folder, strategy, device, make_optimizer, datasets)
            self._resume_within(strategy, folder, progress, device, make_optimizer, datasets)
        if config.tracking.checkpoints:
            strategy.on_epoch_end = lambda s: checkpoint.save_within(
                folder, s, progress.next_experience
            )
        by_class = cfg.scenario != "domain" or per_experience is not None
        labels = [
            f"{i}:" + ",".join(map(str, e.classes)) if by_class else str(i)
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
            results = engine.evaluate(strategy, stream, task, config.data.eval_batch_size)
            progress.matrix.append(
                [task.score(r, e.score_classes) for r, e in zip(results, stream, strict=False)]
            )
            self._log_step(ctx, progress, progress.next_experience - 1, len(steps), labels)
            if config.tracking.checkpoints:
                checkpoint.save(folder, strategy, progress)
        name = task.headline
        write_matrix_json(ctx.run_dir / "accuracy_matrix.json", progress.matrix, labels, name)
        plot_matrix(
            ctx.run_dir / "accuracy_matrix.png",
            progress.matrix,
            labels,
            f"{self.strategy} ({cfg.scenario}-incremental, {config.data.name}): test/{name}",
        )
        metrics = continual_metrics(progress.matrix, name)
        if cfg.scenario == "class":
            metrics.update(self._whole_test_split(strategy, data.test, task, config))
        metrics["train_time_s"] = sum(progress.train_times)
        for j, value in enumerate(progress.matrix[-1]):
            metrics[f"test/{name}_exp{j}"] = value
        if per_experience is None:  # local labels are not the dataset's classes
            ctx.draw_predictions(self._in_data_labels(strategy.model, task), strategy.device)
        for i, seconds in enumerate(progress.train_times):
            metrics[f"train_time_s/exp{i}"] = seconds
        return metrics

    def _resume_within(self, strategy, folder, progress, device, make_optimizer, datasets):
        """Continue the next experience after its last saved epoch, if one was saved."""
        within = checkpoint.load_within(folder, progress.next_experience, device)
        if within is None:
            return
        say(
            f"[continual {self.strategy}] continuing experience {progress.next_experience + 1} "
            f"after its epoch {within['epochs']}"
        )
        path = folder / checkpoint.WITHIN
        strategy.resume_within(
            lambda s: checkpoint.restore(s, within, make_optimizer, datasets, path)
        )

    def _whole_test_split(self, strategy, test, task: Task, config) -> dict[str, float]:
        """The task's metrics on the whole test split, every class labelled, in the dataset's
        class ids: the quantity supervised and federated runs report as ``test/<headline>``.

        The matrix's mean (``test/<headline>_avg``) averages experiences; for segmentation each
        cell is the mIoU of that experience's classes on images that show them, which is not the
        whole split's mIoU (background included, every image once). For classification the two
        differ only by the experiences' sizes.
        """
        from paralab.platform.data.base import make_loader
        from paralab.platform.tasks.evaluate import evaluate, prefixed

        batches = make_loader(test, config.data.eval_batch_size, shuffle=False)
        model = self._in_data_labels(strategy.model, task)
        return prefixed(evaluate(task, model, batches, strategy.device), "test")

    def _in_data_labels(self, model, task: Task):
        """``model`` predicting the dataset's own class ids: a class-incremental classification
        stream renumbers classes by their place in the class order (see :mod:`.scenarios`)."""
        if self.cfg.scenario != "class" or task.name != "classification":
            return model  # masks keep their ids; a pretext head's outputs are not classes
        order = class_order(task.incremental_classes(), self.cfg.class_order_seed)
        return ColumnsInClassOrder(model, torch.argsort(torch.tensor(order)))

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
        name = ctx.task.headline
        record = {
            "experience": float(i),
            "exp/train_time_s": seconds,
            f"exp/{name}_seen": sum(seen) / len(seen),
            f"exp/{name}_all": sum(row) / len(row),
            **{f"exp/{name}_exp{j}": v for j, v in enumerate(row)},
        }
        ctx.tracker.log_metrics(record, step=i)
        what = labels[i] if n_steps > 1 else "all experiences"
        say(
            f"[continual {self.strategy}] experience {i + 1}/{n_steps} ({what}): "
            f"train {seconds:.1f} s, {name} on seen {record[f'exp/{name}_seen']:.3f}, "
            f"on all {record[f'exp/{name}_all']:.3f}",
        )


class ColumnsInClassOrder(torch.nn.Module):
    """``model``'s logits with their columns put back in the dataset's class order."""

    def __init__(self, model: torch.nn.Module, inverse: torch.Tensor) -> None:
        super().__init__()
        self.model, self.inverse = model, inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.inverse.to(x.device)]
