"""Shared fixtures: quiet offline runs on the CPU, run folders under pytest's tmp_path."""

from __future__ import annotations

import os

import pytest

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("PARALAB_DATA_DIR", "/nonexistent/paralab-data")
from paralab.platform.quiet import quiet

quiet()


@pytest.fixture
def refuses(tmp_path):
    """``refuses(experiment, overrides, message)``: running the experiment with the overrides
    is a ConfigError whose message holds ``message`` (literal text), raised before the run's
    output folder exists."""
    import re

    from paralab.errors import ConfigError
    from paralab.platform.config import load
    from paralab.platform.runner import execute

    def check(experiment: str, overrides: list[str], message: str) -> None:
        out = tmp_path / "refused-runs"
        with pytest.raises(ConfigError, match=re.escape(message)):
            execute(load(experiment, [*overrides, f"output_dir={out}"]))
        assert not out.exists()

    return check


@pytest.fixture
def out_dir(tmp_path):
    """An output_dir override that keeps run folders inside the test's tmp folder."""
    return f"output_dir={tmp_path / 'runs'}"


FAST = ["trainer.max_epochs=2", "trainer.progress_bar=false", "tracking.wandb=disabled"]


from tests.ray_cluster import two_node_cluster  # noqa: E402, F401 (a fixture for cluster tests)
