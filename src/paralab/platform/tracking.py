"""The run folder: resolved config, metrics.csv, summary.json, checkpoints and the wandb run.

Metrics go through Lightning's own loggers (CSV always, wandb unless disabled), whether a
paradigm trains with a Lightning Trainer or with its own loop (continual, federated): both call
:meth:`Tracker.log_metrics`, or hand :attr:`Tracker.loggers` to a Trainer.
"""

from __future__ import annotations

import json
import os
import platform as _stdlib_platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

RUN_DIR_ENV = "PARALAB_RUN_DIR"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"


def is_global_zero() -> bool:
    """True in the process that owns the run folder (rank 0 of a DDP job, or a plain process)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def new_run_folder(output_dir: str | Path, name: str) -> Path:
    """``output_dir/<name>-<timestamp>``, with a counter if that exists; created empty."""
    base = Path(output_dir).expanduser() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def versions() -> dict[str, str]:
    names = ["paralab", "torch", "torchvision", "lightning", "torchmetrics"]
    names += [n for n in ("avalanche-lib", "flwr", "ray") if n.split("-")[0] in sys.modules]
    found = {"python": _stdlib_platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class Tracker:
    """Loggers for one run folder. Only the global-zero process writes."""

    def __init__(self, run_dir: Path, plain_config: dict[str, Any], tracking) -> None:
        self.run_dir = run_dir
        self.loggers = self._make_loggers(plain_config, tracking)

    def _make_loggers(self, plain_config: dict[str, Any], tracking) -> list:
        from lightning.pytorch.loggers import CSVLogger

        loggers: list = [CSVLogger(str(self.run_dir), name="", version="")]
        if tracking.wandb != "disabled" and is_global_zero():
            from lightning.pytorch.loggers import WandbLogger

            wandb_logger = WandbLogger(
                project=tracking.project, entity=tracking.entity, name=self.run_dir.name,
                save_dir=str(self.run_dir), mode=tracking.wandb, tags=tracking.tags,
                config=plain_config, settings=_quiet_wandb_settings(),
            )  # fmt: skip
            # Lightning passes anonymous=None, which wandb 0.31 warns about on every run.
            wandb_logger._wandb_init.pop("anonymous", None)
            loggers.append(wandb_logger)
        return loggers

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINTS

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)
        self.loggers[0].save()

    def finish(self, status: str) -> None:
        for logger in self.loggers:
            logger.finalize("success" if status == "completed" else "failed")
        if len(self.loggers) > 1:
            import wandb

            wandb.finish(exit_code=0 if status == "completed" else 1)
            # stop wandb's service process with the run, not at interpreter exit
            wandb.teardown()


def _quiet_wandb_settings():
    import wandb

    return wandb.Settings(silent=True, console="off", x_disable_stats=True)


def write_config(run_dir: Path, plain_config: dict[str, Any]) -> None:
    (run_dir / CONFIG).write_text(yaml.safe_dump(plain_config, sort_keys=False))


def summary_of(run_dir: Path) -> dict[str, Any]:
    from paralab.errors import RunFolderError

    path = run_dir / SUMMARY
    if not path.is_file():
        raise RunFolderError(f"{run_dir} holds no {SUMMARY}: is it a paralab run folder?")
    return read_json(path)
