"""Detection under every paradigm, end to end on tiny digit canvases: a run repeats with the same
seed, an interrupted run resumed ends like an uninterrupted one, class-incremental detection
leaves old objects unlabelled, the federated report says what is aggregated, and a backbone
trained by a classification run starts a detection run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import paralab
from tests.platform.test_runs import Crash
from tests.strategies.test_federated_run import StopAfterRound
from tests.strategies.test_segmentation_runs import latest, rows
from tests.strategies.test_segmentation_runs import learned as learned_values

TINY = [
    "data.train_images=120",
    "data.test_images=40",
    "model.backbone={name:cnn,channels:[8,16,32,32]}",
    "tracking.wandb=disabled",
    "trainer.progress_bar=false",
    "trainer.num_threads=1",
]
CONTINUAL = ["paradigm=continual", "paradigm.n_experiences=2", "paradigm.strategy=replay",
             "paradigm.mem_size=30", "trainer.max_epochs=1"]  # fmt: skip
FEDERATED = ["paradigm=federated", "paradigm.num_clients=3", "paradigm.min_train_clients=3",
             "paradigm.rounds=2", "paradigm.ray_num_cpus=2"]  # fmt: skip


def learned(summary: dict) -> dict:
    """Everything but timings, a class with no objects in a small split (AP NaN) as "nan"."""
    return {k: "nan" if v != v else v for k, v in learned_values(summary).items()}


def run(out: Path, *overrides: str, **kwargs) -> dict:
    return paralab.run("quickstart_detection", [*TINY, f"output_dir={out}", *overrides], **kwargs)


def test_supervised_repeats_and_resumes(tmp_path):
    straight = run(tmp_path, "trainer.max_epochs=2")
    metrics = straight["metrics"]
    for key in ("test/map", "test/map_50", "test/map_75", "test/mar_100", "test/baseline_map_50"):
        assert 0 <= metrics[key] <= 1, key
    assert any(key.startswith("test/ap/") for key in metrics)
    assert metrics["memory/peak_rss_mb"] > 0
    assert (Path(straight["run_dir"]) / "predictions.png").stat().st_size > 1000
    assert learned(run(tmp_path, "trainer.max_epochs=2")) == learned(straight)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "trainer.max_epochs=2", callbacks=[Crash(epoch=1)])
    resumed = paralab.resume(latest(tmp_path))
    assert resumed["resumed"] is True and learned(resumed) == learned(straight)
    assert rows(latest(tmp_path)) == rows(Path(straight["run_dir"]))


@pytest.mark.parametrize("strategy", ["replay", "joint"])
def test_class_incremental_detection_scores_the_whole_split(tmp_path, strategy):
    summary = run(tmp_path, *CONTINUAL, f"paradigm.strategy={strategy}")
    folder = Path(summary["run_dir"])
    saved = json.loads((folder / "accuracy_matrix.json").read_text())
    assert saved["score"] == "test/map"
    metrics = summary["metrics"]
    assert 0 <= metrics["test/map"] <= 1 and "test/ap/0" in metrics
    if strategy == "replay":
        assert len(saved["matrix"]) == 2


def test_federated_resumes_and_reports_what_it_aggregates(tmp_path):
    straight = run(tmp_path, *FEDERATED)
    metrics = straight["metrics"]
    assert metrics["rounds"] == 2 and 0 <= metrics["test/map"] <= 1
    # every tensor of the state dict is averaged: parameters and batch-norm statistics
    assert metrics["federated/aggregated_buffers"] > 0
    assert metrics["federated/aggregated_parameters"] > metrics["federated/aggregated_buffers"]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *FEDERATED, callbacks=[StopAfterRound(1)])
    resumed = paralab.resume(latest(tmp_path))
    assert learned(resumed) == learned(straight)


def test_a_classification_backbone_starts_a_detection_run(tmp_path):
    classify = paralab.run("quickstart_offline", [
        "model.channels=[8,16,32,32]", "trainer.max_epochs=1", "tracking.wandb=disabled",
        "trainer.progress_bar=false", f"output_dir={tmp_path / 'cls'}"])  # fmt: skip
    weights = Path(classify["run_dir"])
    detect = run(tmp_path / "det", "trainer.max_epochs=1", f"model.init_from={weights}")
    assert detect["status"] == "completed"
