"""Everything that builds and drives Avalanche objects: benchmark, strategy, schedule, metrics.

Imported only inside :meth:`Continual.run` (Avalanche's import costs seconds), so this module
(and :mod:`.fastdata`) may import it at the top.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import avalanche.training.supervised as avl_strategies
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.models import MultiTaskModule, avalanche_forward
from avalanche.training import plugins as avl_plugins
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from paralab.platform.data.base import make_loader
from paralab.platform.schema import OptimConfig
from paralab.platform.tasks import Task
from paralab.platform.tasks.evaluate import evaluate as evaluate_task
from paralab.strategies.continual.avalanche_compat import taskaware_dataset
from paralab.strategies.continual.config import ContinualConfig
from paralab.strategies.continual.fastdata import FastDataMixin, PerItem, TaskLabelled
from paralab.strategies.continual.hooks import (
    ConfigSchedule,
    IterationBudget,
    LossWatch,
    WithinExperience,
)
from paralab.strategies.continual.methods import PLUGINS, STRATEGIES
from paralab.strategies.continual.scenarios import Experience
from paralab.strategies.continual.state import with_ids

#: Avalanche warnings a user cannot act on, by message.
NOISE = ("No loggers specified", "Call to deprecated", "deprecated")


@contextmanager
def quiet_avalanche() -> Iterator[None]:
    """Drop Avalanche's per-experience deprecation warnings, pass every other warning on.

    Avalanche's ``@deprecated`` calls ``simplefilter("once")`` itself, which resets the once-
    registry, so a global filter cannot hold it back; recording around the call can.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        noise = issubclass(w.category, DeprecationWarning | FutureWarning)
        if not noise and not any(text in str(w.message) for text in NOISE):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class MultiHead(MultiTaskModule):
    """A shared backbone with one linear head per task (task-incremental scenario)."""

    def __init__(self, backbone: nn.Module, num_features: int, n_tasks: int, per_task: int):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(num_features, per_task) for _ in range(n_tasks))
        self.max_class_label = per_task

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.heads[int(task_label)](self.backbone(x))


class TaskDriven:
    """A strategy whose forward and criterion go through the task: for tasks whose ``unpack``
    makes the inputs from the images (pretext tasks). Avalanche's template feeds ``mb_x`` to
    the model and ``(mb_output, mb_y)`` to the criterion; here the task unpacks the (already
    moved) minibatch into its inputs and targets. Only methods that train through these two
    calls take such a task (``Method.own_forward``)."""

    task: Task

    def forward(self):
        inputs, self._task_targets = self.task.unpack(self.mbatch)
        return self.task.forward(self.model, inputs)

    def criterion(self):
        return self.task.loss(self.mb_output, self._task_targets)


def to_benchmark(stream: list[Experience], task: Task):
    """An Avalanche scenario (train and test streams, task labels, class timeline).

    Avalanche's classification datasets carry one ``targets`` label per sample (class timeline,
    class-balanced buffers): the task's ``partition_labels`` (for masks, the dominant class),
    while the items keep the task's own targets.
    """

    def wrap(images, task_label: int):
        labels = task.partition_labels(images.targets).tolist()
        return taskaware_dataset(PerItem(images), task_label, labels)

    train, first = [], 0
    for e in stream:  # numbered samples: checkpoints save buffers as these numbers
        dataset = wrap(e.train, e.task_label)
        train.append(with_ids(dataset, first))
        first += len(dataset)
    test = [wrap(e.test, e.task_label) for e in stream]
    benchmark = with_classes_timeline(
        with_task_labels(benchmark_from_datasets(train=train, test=test))
    )
    # iCaRL reads the old scenario API; our class-incremental labels are already in class order
    per_exp = [len(e.classes) for e in stream]
    legacy = SimpleNamespace(n_classes_per_exp=per_exp, classes_order=list(range(sum(per_exp))))
    for s in (benchmark.train_stream, benchmark.test_stream):
        for exp in s:
            exp.benchmark = legacy
    return benchmark


def build_strategy(
    cfg: ContinualConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    task: Task,
    optim_cfg: OptimConfig,
    stream: list[Experience],
    device: torch.device,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    fast_data: bool = True,
) -> SupervisedTemplate:
    """The Avalanche strategy named in ``cfg``, with its plugins, our loaders and schedule; its
    criterion is the task's loss (the strategy evaluates nothing itself: see :func:`evaluate`).

    ``fast_data=False`` keeps Avalanche's own data loaders (to measure what the fast path buys).
    """
    method = STRATEGIES[cfg.strategy]
    cls = getattr(avl_strategies, method.avalanche_class)
    if task.makes_inputs:
        cls = type(cls.__name__, (TaskDriven, cls), {"task": task})
    fast = (
        type(cls.__name__, (WithinExperience, cls), {})
        if not fast_data
        else type(
            f"Fast{cls.__name__}",
            (WithinExperience, FastDataMixin, cls),
            {
                "avalanche_class": cls,
                "loader_seed": seed,
                "fast_streams": {
                    "train": [(e.train, e.task_label) for e in stream],
                    "test": [(e.test, e.task_label) for e in stream],
                },
            },
        )
    )
    plugins = [
        getattr(avl_plugins, PLUGINS[p].avalanche_class)(**PLUGINS[p].options(cfg))
        for p in cfg.plugins
    ]
    plugins += [ConfigSchedule(optim_cfg, epochs, cfg.iterations), LossWatch()]
    if cfg.iterations is not None:
        plugins.append(IterationBudget(cfg.iterations))
    with quiet_avalanche():
        evaluator = EvaluationPlugin(loggers=[])
    common: dict[str, Any] = dict(
        optimizer=optimizer,
        train_mb_size=batch_size,
        train_epochs=epochs,
        eval_mb_size=eval_batch_size,
        device=device,
        plugins=plugins,
        evaluator=evaluator,
    )
    criterion = task.loss
    if cfg.strategy == "icarl":
        return fast(
            feature_extractor=model.backbone, classifier=model.head, **common, **method.options(cfg)
        )
    return fast(model=model, criterion=criterion, **common, **method.options(cfg))


def train(strategy: SupervisedTemplate, experiences) -> float:
    """Train on ``experiences``; returns their mean training loss (NaN once training diverged)."""
    with quiet_avalanche():
        strategy.train(experiences)
    watch = next(p for p in strategy.plugins if isinstance(p, LossWatch))
    return watch.mean


def evaluate(
    strategy: SupervisedTemplate, stream: list[Experience], task: Task, batch_size: int
) -> list[dict[str, float]]:
    """The task's metrics of the strategy's model on each experience's test data.

    The platform's one evaluation loop (:func:`paralab.platform.tasks.evaluate.evaluate`) on the
    in-memory test images, not ``strategy.eval``: Avalanche's evaluation goes item by item
    through its dataset layers and reads scores back from metric names. A multi-head model is
    called with the experience's task label (``avalanche_forward``); iCaRL's model classifies by
    nearest class mean in eval mode, as in Avalanche.
    """
    model, results = strategy.model, []
    for e in stream:
        labels = torch.full((batch_size,), e.task_label, device=strategy.device)
        forward = None
        if isinstance(model, MultiTaskModule):

            def forward(x, labels=labels):
                return avalanche_forward(model, x, labels[: len(x)])

        batches = make_loader(TaskLabelled(e.test, e.task_label), batch_size, shuffle=False)
        results.append(evaluate_task(task, model, batches, strategy.device, forward))
    return results
