"""What paralab relies on beyond Lightning's public API (lightning 2.6), in one place.

:func:`history_csv_logger` subclasses ``CSVLogger`` and its ``ExperimentWriter`` and overrides
private members (``ExperimentWriter._check_log_dir_exists``, ``CSVLogger._experiment`` and
``._fs``): Lightning offers no public way to continue an existing ``metrics.csv``.
``tests/platform/test_lightning_compat.py`` fails with a clear message if an upgrade moves them.
"""

from __future__ import annotations

from pathlib import Path

from paralab.platform.tracking import read_metrics, write_metrics

#: The private members :func:`history_csv_logger` overrides or uses, by class.
RELIED_ON = {
    "lightning.pytorch.loggers.csv_logs.ExperimentWriter": ("_check_log_dir_exists", "save"),
    "lightning.pytorch.loggers.CSVLogger": ("experiment", "root_dir", "log_dir"),
}


def history_csv_logger(run_dir: Path, resuming: bool):
    """Lightning's CSVLogger writing ``run_dir/metrics.csv``; resuming, it continues the file.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, so a resumed run
    would lose the rows of its finished epochs, experiences or rounds. This one keeps them: at
    the first save it drops the old rows from the first new row's step on (they were logged
    after the checkpoint and are being redone), then appends as usual.
    """
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class HistoryWriter(ExperimentWriter):
        def __init__(self, log_dir: str) -> None:
            self.history: list[dict[str, str]] | None = None
            super().__init__(log_dir)

        def _check_log_dir_exists(self) -> None:
            path = Path(self.metrics_file_path)
            if resuming and path.is_file():
                self.history, self.metrics_keys = read_metrics(path)
            else:
                path.unlink(missing_ok=True)

        def save(self) -> None:
            if self.history is not None and self.metrics:
                first = float(self.metrics[0]["step"])
                kept = [row for row in self.history if float(row.get("step") or 0) < first]
                write_metrics(Path(self.metrics_file_path), kept, self.metrics_keys)
                self.history = None
            super().save()

    class HistoryCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = HistoryWriter(log_dir=self.log_dir)
            return self._experiment

    return HistoryCSVLogger(str(run_dir), name="", version="")
