"""``trainer.max_steps``: a supervised run trains exactly that many optimizer steps, validates
the model it ends with (Lightning would stop mid-epoch without validating), schedules its
learning rate over the budget, and the paradigms that do not read it refuse it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from paralab.platform.config import load
from paralab.platform.runner import execute
from tests.conftest import FAST


def val_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [r for r in csv.DictReader(file) if r.get("val/acc")]


def test_a_step_budget_stops_at_its_step_and_validates_the_final_model(out_dir):
    summary = execute(load("quickstart_offline", [*FAST, "trainer.max_steps=30", out_dir]))
    metrics = summary["metrics"]
    assert metrics["steps"] == 30
    rows = val_rows(Path(summary["run_dir"]))
    assert len(rows) == 2  # after epoch 1, and after step 30 in epoch 2
    assert float(rows[-1]["val/acc"]) == metrics["val/acc"]


def test_the_epoch_line_counts_steps_under_a_step_budget():
    from types import SimpleNamespace

    from paralab.platform.trainer import where

    budget = SimpleNamespace(max_steps=30, global_step=30, current_epoch=1, max_epochs=-1)
    assert where(budget) == "epoch 2, step 30/30"
    epochs = SimpleNamespace(max_steps=-1, global_step=30, current_epoch=1, max_epochs=5)
    assert where(epochs) == "epoch 2/5"


def test_the_schedule_runs_over_the_step_budget(out_dir):
    import lightning as L

    seen: list[float] = []

    class LastRate(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    overrides = [*FAST, "trainer.max_steps=30", "optim.scheduler=cosine", out_dir]
    execute(load("quickstart_offline", overrides), callbacks=[LastRate()])
    assert len(seen) == 30
    assert seen[0] == pytest.approx(load("quickstart_offline", FAST).optim.lr, rel=0.01)
    assert seen[-1] < 1e-6  # cosine reaches zero at the budget's last step, not an epoch's


def test_paradigms_that_do_not_read_it_refuse_it(refuses):
    refuses("quickstart_continual", [*FAST, "trainer.max_steps=10"], "paradigm.iterations=N")
    refuses("quickstart_federated", [*FAST, "trainer.max_steps=10"], "paradigm.local_epochs")
