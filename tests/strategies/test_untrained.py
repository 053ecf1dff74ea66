"""``paradigm=untrained``: the model as initialised, tested, saved and probed like a trained one."""

from pathlib import Path

import torch

from paralab.platform.config import load
from paralab.platform.runner import execute

TINY = ["tracking.wandb=disabled", "trainer.num_threads=1", "model.channels=[8,16]",
        "paradigm=untrained"]  # fmt: skip


def test_an_untrained_model_scores_near_chance_and_its_random_features_probe_well(tmp_path):
    probe = ["probe.enabled=true", "probe.linear_epochs=30"]
    summary = execute(load("quickstart_offline", [*TINY, *probe, f"output_dir={tmp_path}"]))
    metrics = summary["metrics"]
    assert summary["status"] == "completed" and summary["paradigm"] == "untrained"
    assert metrics["test/acc"] < 0.3  # 10 classes: an untrained head guesses
    assert metrics["probe/linear_acc"] > 0.6  # random conv features are far from useless
    saved = torch.load(Path(summary["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("backbone.") for k in saved["model"])


def test_the_same_seed_gives_the_same_random_model(tmp_path):
    first = execute(load("quickstart_offline", [*TINY, f"output_dir={tmp_path}"]))
    second = execute(load("quickstart_offline", [*TINY, f"output_dir={tmp_path}"]))
    assert first["metrics"]["test/loss"] == second["metrics"]["test/loss"]
