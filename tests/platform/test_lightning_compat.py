"""Fails with a clear message when a Lightning upgrade moves what lightning_compat relies on."""

import importlib

import pytest

from paralab.platform.lightning_compat import RELIED_ON


@pytest.mark.parametrize("path", sorted(RELIED_ON))
def test_lightning_still_has_what_the_history_logger_overrides(path):
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    assert cls is not None, f"{path} is gone: update paralab/platform/lightning_compat.py"
    missing = [m for m in RELIED_ON[path] if not hasattr(cls, m)]
    assert not missing, (
        f"{path} no longer has {missing}: metrics.csv would lose its history on --resume. "
        "Update paralab/platform/lightning_compat.py for this Lightning version"
    )


def test_a_new_writer_still_starts_from_an_empty_file(tmp_path):
    """A fresh run's writer removes a stale metrics.csv (Lightning's own behaviour, kept)."""
    from paralab.platform.lightning_compat import history_csv_logger

    (tmp_path / "metrics.csv").write_text("step,x\n0,1\n")
    logger = history_csv_logger(tmp_path, resuming=False)
    logger.log_metrics({"y": 2.0}, step=0)
    logger.save()
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",") == ["step", "y"]
