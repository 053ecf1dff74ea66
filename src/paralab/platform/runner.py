"""config -> (data, task, paradigm) -> run folder.

Everything that can reject the input (config, data on disk, model options, paradigm pairing)
runs before the run folder is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError, ParalabError, RunFailedError, RunFolderError
from paralab.platform import tracking
from paralab.platform.checkpoints import check_checkpoints
from paralab.platform.config import ResolvedConfig, load_saved
from paralab.platform.data import DATASETS, ClassificationData
from paralab.platform.interrupts import sigint_is_interrupt
from paralab.platform.models import InputSpec
from paralab.platform.models.transfer import init_from, resumed_from_checkpoint
from paralab.platform.progress import say
from paralab.platform.quiet import quiet
from paralab.platform.tasks import TASKS, Task
from paralab.platform.tasks.optim import check_optim

PREDICTIONS = "predictions.png"


@dataclass
class RunContext:
    """What a paradigm receives: the validated config, the data, factories and the tracker."""

    config: ResolvedConfig
    data: ClassificationData
    run_dir: Path
    tracker: tracking.Tracker
    resuming: bool = False
    callbacks: list[Any] = field(default_factory=list)
    _task: Task | None = field(default=None, repr=False)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.data.in_channels, self.data.image_size, self.data.num_classes)

    @property
    def task(self) -> Task:
        """The run's task (built once, from ``config.task`` and the data's classes)."""
        if self._task is None:
            self._task = build_task(self.config, self.data)
        return self._task

    def build_model(
        self, num_classes: int | None = None, *, channels_last: bool | None = None
    ) -> nn.Module:
        """A freshly initialised registry model for this run's task and data
        (``channels_last=None``: ``trainer.channels_last``)."""
        spec = self.input_spec
        if num_classes is not None:
            spec = InputSpec(spec.in_channels, spec.image_size, num_classes)
        return build_model(self.config, spec, channels_last=channels_last, task=self.task)

    def build_module(self, model: nn.Module | None = None):
        """The generic LightningModule that trains this run's task (supervised paradigm)."""
        from paralab.platform.tasks.module import TaskModule

        model = model if model is not None else self.build_model()
        return TaskModule(self.task, model, self.config.optim)

    def draw_predictions(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        """``predictions.png`` in the run folder: the model on the first test images."""
        if not tracking.is_global_zero() or not len(self.data.test):
            return
        from paralab.platform.tasks.pictures import MAX_IMAGES

        batch = self.task.fetch(self.data.test, list(range(min(MAX_IMAGES, len(self.data.test)))))
        was_training = model.training
        model.eval()
        batch = [part.to(device) for part in batch]
        self.task.draw(model, batch, self.run_dir / PREDICTIONS)
        model.train(was_training)

    def last_checkpoint(self, name: str = "last.ckpt") -> str | None:
        """The checkpoint to continue from when resuming, else ``None``."""
        path = self.tracker.checkpoint_dir / name
        return str(path) if self.resuming and path.is_file() else None


def build_model(
    config: ResolvedConfig,
    spec: InputSpec,
    *,
    channels_last: bool | None = None,
    task: Task | None = None,
    initialize: bool = True,
) -> nn.Module:
    """The task's registry model; with ``trainer.channels_last`` (or ``channels_last`` given)
    its conv weights are NHWC, which every paradigm then trains in (conv outputs follow the
    weights). ``task`` defaults to the one ``config.task`` names (its classes are not needed).

    Its backbone starts from ``model.init_from`` when set, for every model, task and paradigm
    (a mismatch is a ConfigError, raised by :func:`prepare` before the run folder exists);
    ``initialize=False`` skips that where the weights come from elsewhere (a federated client
    receives the server's every round)."""
    if task is None:
        task = TASKS.get(config.task.name).obj(config.task, [""] * spec.num_classes)
    model = task.build_model(config, spec)
    if initialize:
        init_from(model, config)
    if config.trainer.channels_last if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_task(config: ResolvedConfig, data: ClassificationData) -> Task:
    """The task ``config.task`` names, for ``data``'s classes."""
    cls = TASKS.get(config.task.name).obj
    task = cls(config.task, data.classes, label_smoothing=config.optim.label_smoothing)
    task.bind(data)
    return task


def load_data(config: ResolvedConfig) -> ClassificationData:
    return DATASETS.get(config.data.name).obj(config.data)


def seed_everything(seed: int) -> None:
    from lightning.fabric.utilities.seed import seed_everything as lightning_seed

    lightning_seed(seed, workers=True, verbose=False)


def prepare(config: ResolvedConfig, data: ClassificationData | None = None):
    """Load data (unless given) and build model and paradigm once: every input error
    surfaces here."""
    from paralab.platform.paradigm import PARADIGMS

    quiet()
    if config.trainer.num_threads:
        import torch

        torch.set_num_threads(config.trainer.num_threads)
    check_optim(config.optim)
    data = data if data is not None else load_data(config)
    task = build_task(config, data)
    task.check(config, data)
    if config.probe.enabled:
        from paralab.platform.probes.run import check_probe

        check_probe(config, data, after_run=True)
    build_model(config, InputSpec(data.in_channels, data.image_size, data.num_classes), task=task)
    paradigm = PARADIGMS.get(config.paradigm.name).obj(config.paradigm)
    if config.trainer.max_steps is not None and paradigm.step_budget is not None:
        raise ConfigError(
            f"trainer.max_steps={config.trainer.max_steps} is Lightning's step budget, which "
            f"paradigm={config.paradigm.name} does not read ({paradigm.step_budget}). Set "
            "trainer.max_steps=null"
        )
    paradigm.check(config, data)
    return data, paradigm


def execute(
    config: ResolvedConfig,
    *,
    run_dir: Path | None = None,
    callbacks: list[Any] | None = None,
    data: ClassificationData | None = None,
) -> dict[str, Any]:
    """Run one config; returns the summary also written to ``summary.json``.

    ``run_dir`` given means resume: the folder exists and its checkpoints are continued.
    ``data`` given skips loading it (a suite loads each distinct dataset config once).
    """
    previous = check_resumable(run_dir) if run_dir is not None else {}
    if run_dir is not None:
        resumed_from_checkpoint(config, run_dir)
    data, paradigm = prepare(config, data)
    resuming = run_dir is not None
    owner = tracking.is_global_zero()
    inherited = os.environ.get(tracking.RUN_DIR_ENV)
    if not owner and inherited:
        run_dir = Path(inherited)
    elif run_dir is None:
        run_dir = tracking.new_run_folder(config.output_dir, config.name)
    if owner:
        tracking.write_config(run_dir, config.plain)
        os.environ[tracking.RUN_DIR_ENV] = str(run_dir)
    summary = _start_summary(config, paradigm, run_dir, resuming)
    summary["started"] = previous.get("started", summary["started"])
    seed_everything(config.seed)
    tracker = tracking.Tracker(run_dir, config.plain, config.tracking, resuming=resuming)
    ctx = RunContext(config, data, run_dir, tracker, resuming, list(callbacks or []))
    started = time.perf_counter() - _wall_time(previous)  # a resumed run counts its earlier parts
    try:
        with sigint_is_interrupt():  # Ctrl-C is KeyboardInterrupt under every paradigm
            metrics = paradigm.run(ctx)
            if config.probe.enabled and owner:  # rank 0 probes the checkpoint it saved
                from paralab.platform.probes.run import probe_after_run

                metrics.update(probe_after_run(config, data, run_dir))
    except ParalabError as error:
        if not isinstance(error, RunFailedError):
            tracker.finish("failed")
            if owner and not resuming:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        _close_failed(summary, run_dir, tracker, owner, "failed", error, started)
        raise
    except BaseException as error:
        _close_failed(summary, run_dir, tracker, owner, "interrupted", error, started)
        raise
    finally:
        os.environ.pop(tracking.RUN_DIR_ENV, None)

    summary.update(
        status="completed",
        metrics={k: float(v) for k, v in sorted(metrics.items())},
        wall_time_s=round(time.perf_counter() - started, 3),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    tracker.finish("completed")
    if owner:
        tracking.write_json(run_dir / tracking.SUMMARY, summary)
    return summary


def _close_failed(summary, run_dir, tracker, owner, status, error, started) -> None:
    """Record why a started run stopped, keep its folder for --resume, and say how (a diverged
    run would diverge again from its checkpoint: its message says to start a new one)."""
    from paralab.platform.divergence import DivergedError

    summary.update(status=status, error=f"{type(error).__name__}: {error}",
                   wall_time_s=round(time.perf_counter() - started, 3))  # fmt: skip
    if owner:
        tracking.write_json(run_dir / tracking.SUMMARY, summary)
        hint = "" if isinstance(error, DivergedError) else (
            f"; continue it with: paralab run --resume {run_dir}")  # fmt: skip
        say(f"run {status}; its folder: {run_dir}{hint}")
    tracker.finish("failed")


def check_resumable(run_dir: Path) -> dict[str, Any]:
    """Read what a resume continues, before anything in ``run_dir`` is written: the previous
    summary (``{}`` if the run stopped before writing one), every checkpoint (loaded as data
    only) and ``metrics.csv``. A damaged file is a :class:`RunFolderError` naming it."""
    summary_path = run_dir / tracking.SUMMARY
    previous = tracking.read_json(summary_path) if summary_path.is_file() else {}
    check_checkpoints(run_dir)
    if (run_dir / tracking.METRICS).is_file():
        tracking.read_metrics(run_dir / tracking.METRICS)
    return previous


def _wall_time(summary: dict[str, Any]) -> float:
    """The seconds an earlier part of the run took (0 for a fresh run or an unknown value)."""
    value = summary.get("wall_time_s")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def _start_summary(config: ResolvedConfig, paradigm, run_dir: Path, resuming: bool) -> dict:
    return {
        "name": config.name,
        "paradigm": config.paradigm.name,
        "strategy": paradigm.strategy,
        "model": config.model.name,
        "dataset": config.data.name,
        "task": config.task.name,
        "headline": f"test/{TASKS.get(config.task.name).obj.headline}",
        "seed": config.seed,
        "status": "running",
        "resumed": resuming,
        "metrics": {},
        "wall_time_s": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "run_dir": str(run_dir),
        "versions": tracking.versions(),
    }


def resume(run_dir: str | Path, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its last checkpoint, with its saved config.

    A run whose summary says ``completed`` is not trained again: its summary is returned as it
    is (every paradigm's checkpoint would otherwise start over or repeat its last part).
    """
    path = Path(run_dir).expanduser()
    if not (path / tracking.CONFIG).is_file():
        raise RunFolderError(
            f"--resume {path}: no {tracking.CONFIG} there. Give a folder made by `paralab run`"
        )
    config = load_saved(path / tracking.CONFIG)
    summary_path = path / tracking.SUMMARY
    if summary_path.is_file() and tracking.is_global_zero():
        summary = tracking.read_json(summary_path)
        if summary.get("status") == "completed":
            say(f"{path}: this run completed earlier; nothing to resume (its folder is unchanged)")
            return _as_returned(summary, path)
    return execute(config, run_dir=path, callbacks=callbacks)


def _as_returned(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A saved summary as :func:`execute` returns one: metrics as floats (``null``, a diverged
    value, back to NaN) and ``run_dir`` where the folder is now."""
    metrics = {k: float("nan") if v is None else v for k, v in summary.get("metrics", {}).items()}
    return {**summary, "metrics": metrics, "run_dir": str(run_dir)}
