"""The run folder: resolved config, metrics.csv, summary.json, checkpoints and the wandb run.

Metrics go through Lightning's own loggers (CSV always, wandb unless disabled), whether a
paradigm trains with a Lightning Trainer or with its own loop (continual, federated): both call
:meth:`Tracker.log_metrics`, or hand :attr:`Tracker.loggers` to a Trainer.
"""

from __future__ import annotations

import csv
import json
import math
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
METRICS = "metrics.csv"


def is_global_zero() -> bool:
    """True in the process that owns the run folder (rank 0 of a DDP job, or a plain process)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def new_run_folder(output_dir: str | Path, name: str) -> Path:
    """``output_dir/<name>-<timestamp>``, with a counter if that exists; created empty.

    Always a direct child of ``output_dir``: a name that is not one safe folder name, or an
    output_dir where no folder can be made, is a :class:`RunFolderError` (nothing is created).
    Validation refuses both earlier; this guards configs changed in Python after validation.
    """
    from paralab.errors import RunFolderError
    from paralab.platform.schema import output_dir_problem, run_name_problem

    problem = run_name_problem(name) or output_dir_problem(str(output_dir))
    if problem:
        raise RunFolderError(f"run folder {name!r} in {output_dir}: {problem}")
    base = Path(output_dir).expanduser() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    try:
        path.mkdir(parents=True)
    except OSError as error:
        raise RunFolderError(
            f"cannot create the run folder {path} ({error.strerror}). "
            "Set output_dir= a folder you can write, e.g. output_dir=runs"
        ) from None
    return path


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write strict JSON atomically (a reader never sees half a file).

    NaN and infinities (a diverged metric) become ``null``: bare ``NaN`` is not JSON, and
    strict parsers (``jq``, JavaScript, ``json.loads(parse_constant=...)``) refuse the file.
    """
    text = json.dumps(_finite(payload), indent=2, sort_keys=False, default=str, allow_nan=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, containers walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a damaged file is a RunFolderError naming it."""
    from paralab.errors import RunFolderError

    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = f"is not valid JSON ({error})"
    else:
        if isinstance(payload, dict):
            return payload
        reason = f"holds a JSON {type(payload).__name__}, not an object"
    raise RunFolderError(f"{path} {reason}. {JSON_REMEDY.get(path.name, JSON_REMEDY[''])}")


JSON_REMEDY = {
    SUMMARY: "A run writes it when it ends: restore it, or delete that run folder and run it "
    "again (`paralab bench --resume` reruns a suite's missing runs)",
    "comparison.json": "`paralab bench --resume <bench folder>` writes it again",
    "suite.json": "Restore it, or run the suite again with `paralab bench <suite>`",
    "": "Restore it, or run again what wrote it",
}


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
    """Loggers for one run folder. Only the global-zero process writes.

    ``resuming``: ``metrics.csv`` keeps the rows of the run so far
    (:func:`paralab.platform.lightning_compat.history_csv_logger`).
    """

    def __init__(
        self, run_dir: Path, plain_config: dict[str, Any], tracking, resuming: bool = False
    ) -> None:
        self.run_dir = run_dir
        self.loggers = self._make_loggers(plain_config, tracking, resuming)

    def _make_loggers(self, plain_config: dict[str, Any], tracking, resuming: bool) -> list:
        from paralab.platform.lightning_compat import history_csv_logger

        loggers: list = [history_csv_logger(self.run_dir, resuming)]
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


def read_metrics(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and column names of a ``metrics.csv``; a damaged file is a RunFolderError."""
    from paralab.errors import RunFolderError

    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            rows = []
            for row in reader:
                if None in row:
                    raise ValueError(f"line {reader.line_num} has more fields than the header")
                float(row.get("step") or 0)  # a step that is not a number raises here
                rows.append(row)
            columns = sorted(reader.fieldnames or [])
    except (csv.Error, UnicodeDecodeError, ValueError, TypeError) as error:
        raise RunFolderError(
            f"{path} is not a metrics table paralab wrote ({error}). Restore it, or delete it "
            "(the resumed run then logs from its checkpoint on)"
        ) from None
    return rows, columns


def write_metrics(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    """Write ``rows`` atomically: a crash mid-write leaves the previous file."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


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
    summary = read_json(path)
    missing = [k for k in ("name", "paradigm", "model", "dataset") if k not in summary]
    if missing:
        raise RunFolderError(f"{path} lacks {', '.join(missing)}. {JSON_REMEDY[SUMMARY]}")
    return summary
