"""Shared fixtures: quiet offline runs on the CPU, run folders under pytest's tmp_path."""

from __future__ import annotations

import os

import pytest

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("PARALAB_DATA_DIR", "/nonexistent/paralab-data")
from paralab.platform.quiet import quiet

quiet()


@pytest.fixture
def out_dir(tmp_path):
    """An output_dir override that keeps run folders inside the test's tmp folder."""
    return f"output_dir={tmp_path / 'runs'}"


FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "tracking.wandb=disabled"]
