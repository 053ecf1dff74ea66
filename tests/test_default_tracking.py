"""The default tracking path, as a user gets it: no WANDB_MODE, no tracking override, so wandb
runs offline and writes its run into the run folder. The rest of the suite runs with wandb
disabled (conftest) because each offline run costs a wandb service start; these tests keep the
default covered for the supervised and continual paradigms (federated: its own tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import paralab

RUNS = {
    "supervised": ("quickstart_offline", ["trainer.max_epochs=1"]),
    "continual": ("quickstart_continual", ["trainer.max_epochs=1"]),
}


@pytest.mark.parametrize("paradigm", sorted(RUNS))
def test_default_tracking_writes_an_offline_wandb_run(paradigm, out_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    experiment, overrides = RUNS[paradigm]
    summary = paralab.run(experiment, [*overrides, "trainer.progress_bar=false", out_dir])
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "completed" and summary["paradigm"] == paradigm
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["tracking"]["wandb"] == "offline"
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    (records,) = offline_run.glob("*.wandb")
    assert records.stat().st_size > 0
